//! The LU CLIs end to end: `stmfadm` and `sbdadm` against a real stmfd with sbd loaded.
//!
//! Run `cargo build --workspace` first (binaries and `libsbd.so` come from the target dir).

use rstmf_tests::daemon::{artifact, Daemon, DaemonEnv};
use serde_json::{json, Value};
use std::path::Path;

fn load_sbd(d: &Daemon) {
    let lib = artifact("libsbd.so");
    d.cli_ok(
        "stmfadm",
        &["load-provider", lib.to_str().expect("utf-8 path")],
    );
}

/// The GUID in a line `<prefix><GUID>` of `out`.
fn guid_after(out: &str, prefix: &str) -> String {
    let g = out
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{out}"))
        .trim()
        .to_owned();
    assert_eq!(g.len(), 32, "{out}");
    g
}

/// The value of `Label: value` in verbose output (the first occurrence).
fn field<'a>(out: &'a str, label: &str) -> &'a str {
    out.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == label).then_some(v.trim())
        })
        .unwrap_or_else(|| panic!("no {label} in:\n{out}"))
}

fn lu_json(d: &Daemon, guid: &str) -> Value {
    let v = d.cli_json("stmfadm", &["list-lu", guid]);
    v[0].clone()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn stmfadm_create_list_modify_delete_keep_and_import() {
    let env = DaemonEnv::new();
    let d = env.start();
    load_sbd(&d);
    let file = env.path().join("lu0.img");

    let out = d.cli_ok(
        "stmfadm",
        &[
            "create-lu",
            "-p",
            "alias=disk0",
            "-p",
            "wcd=true",
            "-s",
            "64m",
            s(&file),
        ],
    );
    let guid = guid_after(&out, "Logical unit created: ");
    assert_eq!(std::fs::metadata(&file).expect("data file").len(), 64 << 20);
    assert!(env.path().join("lu0.img.meta").exists());

    let v = d.cli_ok("stmfadm", &["list-lu", "-v", &guid]);
    assert!(v.starts_with(&format!("LU Name: {guid}\n")), "{v}");
    assert_eq!(field(&v, "Operational Status"), "Online");
    assert_eq!(field(&v, "Provider Name"), "sbd");
    assert_eq!(field(&v, "Alias"), "disk0");
    assert_eq!(field(&v, "Data File"), s(&file));
    assert_eq!(field(&v, "Size"), (64u64 << 20).to_string());
    assert_eq!(field(&v, "Block Size"), "512");
    assert_eq!(field(&v, "Writeback Cache"), "Disabled");
    assert_eq!(field(&v, "Write Protect"), "Disabled");
    assert!(v.contains("    Provider Name     : sbd\n"), "aligned: {v}");

    d.cli_ok("stmfadm", &["add-view", "-n", "3", &guid]);
    // Grow online and rename; -s takes a suffix, -p more than once.
    d.cli_ok(
        "stmfadm",
        &[
            "modify-lu",
            "-s",
            "128M",
            "-p",
            "alias=big",
            "-p",
            "wp=true",
            &guid,
        ],
    );
    let l = lu_json(&d, &guid);
    assert_eq!(l["details"]["size"], json!(128u64 << 20), "{l}");
    assert_eq!(l["details"]["alias"], "big", "{l}");
    assert_eq!(l["details"]["write_protect"], true, "{l}");
    assert_eq!(std::fs::metadata(&file).expect("data").len(), 128 << 20);
    let v = d.cli_ok("stmfadm", &["list-lu", "-v", &guid]);
    assert_eq!(field(&v, "Alias"), "big", "the provider's alias is current");
    // Shrinking is refused, and changes nothing.
    let e = d.cli_err("stmfadm", &["modify-lu", "-s", "1m", &guid], 1);
    assert!(e.contains("shrink"), "{e}");
    d.cli_ok("stmfadm", &["modify-lu", "-p", "wp=false", &guid]);

    // delete-lu -k: the LU goes, its data and view entries stay.
    d.cli_ok("stmfadm", &["delete-lu", "-k", &guid]);
    let lus = d.cli_json("stmfadm", &["list-lu"]);
    assert_eq!(lus, json!([]), "{lus}");
    assert!(file.exists());
    let views = d.cli_json("stmfadm", &["list-view", "-l", &guid]);
    assert_eq!(views[0]["lun"], 3, "{views}");

    // import-lu brings it back under the same GUID, with its properties and views.
    let out = d.cli_ok("stmfadm", &["import-lu", s(&file)]);
    assert_eq!(guid_after(&out, "Logical unit imported: "), guid);
    let l = lu_json(&d, &guid);
    assert_eq!(l["views"], 1, "{l}");
    assert_eq!(l["details"]["size"], json!(128u64 << 20), "{l}");
    assert_eq!(l["details"]["alias"], "big", "{l}");
    assert_eq!(l["details"]["write_cache"], false, "{l}");

    // delete-lu without -k removes the view entries as well.
    let r = d.cli_json("stmfadm", &["delete-lu", &guid]);
    assert_eq!(r["views_removed"], 1, "{r}");
    let e = d.cli_err("stmfadm", &["list-view", "-l", &guid], 1);
    assert!(e.contains("not registered"), "{e}");
    // Importing by the metadata file works too; no views now.
    let meta = env.path().join("lu0.img.meta");
    let r = d.cli_json("stmfadm", &["import-lu", s(&meta)]);
    assert_eq!(r["guid"], guid.as_str(), "{r}");
    assert_eq!(lu_json(&d, &guid)["views"], 0);

    // A second create on the same file is refused (its metadata exists).
    let e = d.cli_err("stmfadm", &["create-lu", s(&file)], 1);
    assert!(e.contains("import-lu"), "{e}");
    d.stop();
}

#[test]
fn stmfadm_ram_lu_online_offline_and_restart() {
    let env = DaemonEnv::new();
    let d = env.start();
    load_sbd(&d);
    let r = d.cli_json(
        "stmfadm",
        &["create-lu", "--ram", "-s", "16m", "-p", "blk=4096"],
    );
    let ram = r["guid"].as_str().expect("guid").to_owned();
    let v = d.cli_ok("stmfadm", &["list-lu", "-v", &ram]);
    assert_eq!(field(&v, "Data File"), "RAM");
    assert_eq!(field(&v, "Block Size"), "4096");
    d.cli_ok("stmfadm", &["offline-lu", &ram]);
    assert_eq!(lu_json(&d, &ram)["state"], "offline");
    d.cli_ok("stmfadm", &["online-lu", &ram]);
    assert_eq!(lu_json(&d, &ram)["state"], "online");

    // stmfd's embedded default sends this exact request to sbd.
    let r = d.cli_json(
        "stmfadm",
        &[
            "provider-control",
            "sbd",
            r#"{"op":"create-lu","backing":"ram","size":67108864,"alias":"default"}"#,
        ],
    );
    let def = r["guid"].as_str().expect("guid").to_owned();
    let l = lu_json(&d, &def);
    assert_eq!(l["alias"], "default", "{l}");
    assert_eq!(l["details"]["size"], 67108864, "{l}");

    let file = env.path().join("f.img");
    let r = d.cli_json("stmfadm", &["create-lu", "-s", "4m", s(&file)]);
    let f = r["guid"].as_str().expect("guid").to_owned();
    d.stop();

    // Every LU comes back after a restart (RAM LUs empty, by nature).
    let d = env.start();
    let lus = d.cli_json("stmfadm", &["list-lu"]);
    for g in [&ram, &def, &f] {
        assert!(
            lus.as_array()
                .expect("array")
                .iter()
                .any(|l| l["guid"] == g.as_str()),
            "{g} not back: {lus}"
        );
    }
    assert_eq!(lu_json(&d, &ram)["details"]["block_size"], 4096);
    d.stop();
}

#[test]
fn sbdadm_create_list_modify_delete_keep_and_import() {
    let env = DaemonEnv::new();
    let d = env.start();
    load_sbd(&d);
    let file = env.path().join("sbd0.img");

    let out = d.cli_ok("sbdadm", &["create-lu", "-s", "32m", s(&file)]);
    assert!(out.starts_with("Created the following LU:\n\n"), "{out}");
    assert!(
        out.contains("GUID                    DATA SIZE           SOURCE"),
        "{out}"
    );
    let row = out
        .lines()
        .find(|l| l.ends_with(s(&file)))
        .unwrap_or_else(|| panic!("no row for the file:\n{out}"));
    let guid = row.split_whitespace().next().expect("guid").to_owned();
    assert_eq!(row.split_whitespace().nth(1), Some("33554432"), "{row}");

    let out = d.cli_ok(
        "sbdadm",
        &["create-lu", "--ram", "-s", "8m", "-p", "alias=scratch"],
    );
    let ram_row = out.lines().find(|l| l.ends_with("RAM")).expect("RAM row");
    let ram = ram_row.split_whitespace().next().expect("guid").to_owned();

    let out = d.cli_ok("sbdadm", &["list-lu"]);
    assert!(out.starts_with("Found 2 LU(s)\n"), "{out}");
    assert!(out.contains(&guid) && out.contains(&ram), "{out}");
    let out = d.cli_ok("sbdadm", &["list-lu", "-v", &ram]);
    assert_eq!(field(&out, "Alias"), "scratch");
    assert_eq!(field(&out, "Operational Status"), "Online");
    assert_eq!(field(&out, "Size"), (8u64 << 20).to_string());
    assert!(!out.contains(&guid), "filtered: {out}");
    let j = d.cli_json("sbdadm", &["list-lu", &guid]);
    assert_eq!(j.as_array().map(Vec::len), Some(1), "{j}");
    assert_eq!(j[0]["data"], s(&file), "{j}");

    // modify-lu by file name grows the LU.
    d.cli_ok("sbdadm", &["modify-lu", "-s", "48m", s(&file)]);
    let j = d.cli_json("sbdadm", &["list-lu", &guid]);
    assert_eq!(j[0]["size"], json!(48u64 << 20), "{j}");
    d.cli_ok("sbdadm", &["modify-lu", "-s", "1g", &guid]);
    assert_eq!(std::fs::metadata(&file).expect("data").len(), 1 << 30);

    d.cli_ok("stmfadm", &["add-view", &guid]);
    d.cli_ok("sbdadm", &["delete-lu", "-k", &guid]);
    let out = d.cli_ok("sbdadm", &["list-lu"]);
    assert!(
        out.starts_with("Found 1 LU(s)\n") && !out.contains(&guid),
        "{out}"
    );
    let out = d.cli_ok("sbdadm", &["import-lu", s(&file)]);
    assert!(out.starts_with("Imported the following LU:\n"), "{out}");
    assert!(out.contains(&guid), "same GUID after import: {out}");
    assert!(out.contains(&(1u64 << 30).to_string()), "{out}");
    assert_eq!(lu_json(&d, &guid)["views"], 1, "views kept with -k");

    // Without -k the views go; the data stays.
    let r = d.cli_json("sbdadm", &["delete-lu", &guid]);
    assert_eq!(r["deleted"], guid.as_str(), "{r}");
    assert_eq!(r["views_removed"], 1, "{r}");
    assert!(file.exists());
    d.cli_ok("sbdadm", &["delete-lu", &ram]);
    let out = d.cli_ok("sbdadm", &["list-lu"]);
    assert!(out.starts_with("Found 0 LU(s)\n"), "{out}");
    d.stop();
}

#[test]
fn lu_cli_errors() {
    let env = DaemonEnv::new();
    let d = env.start();
    load_sbd(&d);
    let file = env.path().join("e.img");
    let missing = "600144F0000000000000000000000001";
    for prog in ["stmfadm", "sbdadm"] {
        // Usage errors: exit 2.
        d.cli_err(prog, &["create-lu", "-s", "ten", s(&file)], 2);
        d.cli_err(prog, &["create-lu"], 2);
        d.cli_err(prog, &["create-lu", "-p", "wcd", s(&file)], 2);
        d.cli_err(prog, &["modify-lu", missing], 2);
        d.cli_err(prog, &["delete-lu", "not-a-guid"], 2);
        // The daemon or the provider refuses: exit 1, with the reason.
        let e = d.cli_err(prog, &["delete-lu", missing], 1);
        assert!(
            e.starts_with(&format!("{prog}: ")) && e.contains("not found"),
            "{e}"
        );
        let e = d.cli_err(prog, &["create-lu", s(&file)], 1);
        assert!(e.contains("give a size"), "{e}");
        let e = d.cli_err(
            prog,
            &["create-lu", "--ram", "-s", "8m", "-p", "colour=red"],
            1,
        );
        assert!(e.contains("colour"), "{e}");
        let e = d.cli_err(
            prog,
            &["create-lu", "--ram", "-s", "8m", "-p", "wp=1", "-p", "wp=0"],
            1,
        );
        assert!(e.contains("more than once"), "{e}");
        let e = d.cli_err(prog, &["import-lu", s(&file)], 1);
        assert!(e.contains("e.img.meta"), "{e}");
        let e = d.cli_err(prog, &["modify-lu", "-s", "2g", "/nonexistent.img"], 1);
        assert!(e.contains("/nonexistent.img"), "{e}");
    }
    assert_eq!(d.cli_json("stmfadm", &["list-lu"]), json!([]));
    d.stop();
    // No daemon: the error names the socket.
    let o = std::process::Command::new(artifact("sbdadm"))
        .args(["--socket", "/nonexistent/stmfd.sock", "list-lu"])
        .output()
        .expect("sbdadm");
    assert_eq!(o.status.code(), Some(1));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("/nonexistent/stmfd.sock") && e.contains("stmfd"),
        "{e}"
    );
}
