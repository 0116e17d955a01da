pub mod null_port;
