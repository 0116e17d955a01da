//! Logs in to an `iscsi://` URL, prints the negotiated parameters and the capacity,
//! and lists the portal's targets: `cargo run --example probe -- iscsi://127.0.0.1/iqn.x:y/1`.

use iscsi_initiator::{IscsiUrl, LoginOptions, Session};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = std::env::args()
        .nth(1)
        .ok_or("usage: probe iscsi://host[:port]/iqn/lun")?;
    let url: IscsiUrl = arg.parse()?;
    let opts = LoginOptions::default();
    for t in Session::discover(&url.portal.to_string(), &opts)? {
        let portals: Vec<_> = t.portals.iter().map(|p| p.address.as_str()).collect();
        println!("target {} at {}", t.name, portals.join(" "));
    }
    let mut s = Session::login(&url, &opts)?;
    println!("params {:?}", s.core().params());
    let cap = s.read_capacity()?;
    println!("capacity {} blocks of {} bytes", cap.blocks, cap.block_size);
    s.logout()?;
    Ok(())
}
