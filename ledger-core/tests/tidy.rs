//! Architecture invariant: ledger-core does no I/O and never depends on an async runtime,
//! storage engine, RPC stack or message bus. This test asks cargo for the crate's normal
//! dependency tree and fails if one of them appears.

use std::process::Command;

#[test]
fn core_dependency_tree_has_no_io_crates() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "-p",
            "ledger-core",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    let crates: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        crates.contains(&"ed25519-dalek"),
        "the tree looks wrong:\n{tree}"
    );
    for banned in [
        "tokio",
        "sled",
        "tonic",
        "async-nats",
        "mio",
        "hyper",
        "prost",
        "rand",
        "getrandom",
        "chrono",
    ] {
        assert!(
            !crates.contains(&banned),
            "ledger-core depends on {banned}:\n{tree}"
        );
    }
}
