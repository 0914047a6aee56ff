//! A network for real use, end to end: `ledger network init` makes the anchor, keys,
//! certificates and node directories; a node runs from its directory; `ledger network
//! rotate-key` gives a site a new key that the restarted node signs with; `ledger network
//! revoke` retires it and the restarted node refuses to sign with it; `ledger network
//! rotate-token` replaces a node's token file whole. A regulator verifies
//! the exported chain with nothing but the anchor fingerprint `ledger network info` prints.
//! Bad input gets exit code 2 and a message that says what was wrong.

use ledger_core::Timestamp;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use tests::{bin, output_text as text, Node};

const COI: &str = "CHA999926ABC123";

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(bin("ledger").expect("ledger binary"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run ledger")
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

fn now() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis();
    Timestamp(i64::try_from(ms).expect("ms fit"))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Appends one step as clinic-a, returning the command's output.
fn append(node: &Node, token: &Path, dir: &Path, name: &str, body: &str) -> Output {
    let step = dir.join(format!("{name}.toml"));
    let at = Timestamp(now().0 - 1000);
    std::fs::write(
        &step,
        format!("coi = \"{COI}\"\nsite = \"clinic-a\"\nat = \"{at}\"\noperator = \"nurse.kim\"\nname = \"K. Kim RN\"\n{body}"),
    )
    .expect("write step");
    run(
        &[
            "append",
            p(&step),
            "--token-file",
            p(token),
            "--output",
            "json",
        ],
        &[("LEDGER_NODE", &node.addr)],
    )
}

/// Exit code 2, and a message on standard error that says what was wrong.
#[track_caller]
fn refused(o: &Output, says: &str) {
    assert_eq!(o.status.code(), Some(2), "{}", text(o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(says),
        "{}",
        text(o)
    );
}

fn export(node: &Node, token: &Path, out: &Path) -> Output {
    run(
        &["export", COI, "--out", p(out), "--token-file", p(token)],
        &[("LEDGER_NODE", &node.addr)],
    )
}

fn start(data: &Path, net: &Path) -> Node {
    Node::start(data, &["--network-dir", p(net), "--site", "clinic-a"]).expect("node starts")
}

/// `ledger network init ROOT --sites SITES --network prod-net --output json`.
fn init_prod_net(root: &Path, sites: &str) -> Output {
    run(
        &[
            "network",
            "init",
            p(root),
            "--sites",
            sites,
            "--network",
            "prod-net",
            "--output",
            "json",
        ],
        &[],
    )
}

#[test]
fn init_rotate_revoke_and_verify_by_fingerprint() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("net");
    let o = init_prod_net(&root, "clinic-a:clinic,depot-1:depot,mfg-1:manufacturer");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let created = json(&o);
    let fingerprint = created["anchor_fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_owned();
    assert!(fingerprint.starts_with("sha256:") && fingerprint.len() == 71);
    assert_eq!(created["nodes"].as_array().map(Vec::len), Some(3));

    // Secrets are readable by the owner only; the trust is complete in every node dir.
    assert_eq!(mode(&root.join("anchor/anchor.key")), 0o600);
    let net = root.join("nodes/clinic-a/network");
    assert_eq!(mode(&net.join("sites/clinic-a.key")), 0o600);
    for token in ["clinic-a", "auditor", "regulator", "admin"] {
        assert_eq!(mode(&net.join(format!("tokens/{token}.token"))), 0o600);
    }
    assert!(
        !net.join("sites/depot-1.key").exists(),
        "a node holds only its own site's key"
    );
    assert!(!net.join("anchor.key").exists() && !root.join("trust/anchor.key").exists());
    // Without --network the id is the directory's name.
    let human = run(
        &[
            "network",
            "init",
            p(&tmp.path().join("other-net")),
            "--sites",
            "clinic-a:clinic",
        ],
        &[],
    );
    assert_eq!(human.status.code(), Some(0), "{}", text(&human));
    assert!(
        String::from_utf8_lossy(&human.stdout).contains("created network other-net"),
        "{}",
        text(&human)
    );
    assert!(
        String::from_utf8_lossy(&human.stdout).contains("WARNING"),
        "{}",
        text(&human)
    );

    // The node configuration init wrote is one the node accepts.
    let check = Command::new(bin("ledger-node").expect("ledger-node"))
        .args(["check-config", "--config", "node.toml"])
        .current_dir(root.join("nodes/clinic-a"))
        .output()
        .expect("check-config");
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));

    // info reads the operator's directory and a node's network directory alike.
    for dir in [&root, &net] {
        let o = run(&["network", "info", p(dir), "--output", "json"], &[]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let info = json(&o);
        assert_eq!(info["anchor_fingerprint"], fingerprint.as_str());
        assert_eq!(info["network"], "prod-net");
        assert_eq!(info["certificates"].as_array().map(Vec::len), Some(3));
    }

    // A node runs on the network and signs with the site's key.
    let data = tmp.path().join("clinic-a-data");
    let token = net.join("tokens/clinic-a.token");
    let auditor = net.join("tokens/auditor.token");
    let mut node = start(&data, &net);
    let o = append(&node, &token, tmp.path(), "collect", "kind = \"collection\"\ncreates = [{ unit = \"APH-1\", deadline = \"2099-01-01T00:00:00Z\", temp = [2.0, 8.0] }]\ndins = [\"A999926123456\"]\n");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    node.stop().expect("stop");

    // Rotation: a new certificate everywhere, the new key in the site's node directory.
    let o = run(
        &[
            "network",
            "rotate-key",
            "clinic-a",
            "--dir",
            p(&root),
            "--output",
            "json",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let rotated = json(&o);
    let new_key = rotated["key_fingerprint"].as_str().expect("key").to_owned();
    let old_key = rotated["old_keys"][0].as_str().expect("old key").to_owned();
    assert_ne!(new_key, old_key);
    assert_eq!(rotated["written_to"].as_array().map(Vec::len), Some(4));
    assert!(root
        .join("nodes/depot-1/network/certs/clinic-a.2.cert")
        .exists());
    assert_eq!(mode(&net.join("sites/clinic-a.key")), 0o600);

    let mut node = start(&data, &net);
    let o = append(
        &node,
        &token,
        tmp.path(),
        "label",
        "kind = \"label_verification\"\nunit = \"APH-1\"\n",
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let info = run(
        &["node-info", "--token-file", p(&auditor), "--output", "json"],
        &[("LEDGER_NODE", &node.addr)],
    );
    assert_eq!(
        json(&info)["sites"][0]["key_fingerprint"],
        new_key.as_str(),
        "the node signs with the new key"
    );

    // The regulator's check: the export verifies with only the fingerprint, and says what
    // it rests on (both certified keys of clinic-a, one event each).
    let bundle = tmp.path().join("chain.bundle");
    let o = export(&node, &auditor, &bundle);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    node.stop().expect("stop");

    // Revocation of the new key from now: the restarted node refuses to sign with it, for
    // an append and for an export alike.
    let from = now().to_string();
    let revoke = |key: Option<&str>| {
        let mut args = vec![
            "network",
            "revoke",
            "clinic-a",
            "--dir",
            p(&root),
            "--from",
            &from,
        ];
        args.extend(key.map(|k| ["--key", k]).into_iter().flatten());
        args.extend(["--reason", "key left the building"]);
        run(&args, &[])
    };
    // Two keys and no --key: which one is unclear.
    refused(&revoke(None), "say which with --key");
    let o = revoke(Some(&new_key));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let mut node = start(&data, &net);
    let o = append(
        &node,
        &token,
        tmp.path(),
        "note",
        "kind = \"note\"\ntext = \"after revocation\"\n",
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let said = json(&o);
    let error = said["error"].as_str().unwrap_or("");
    assert!(
        error.contains("cannot sign for site clinic-a") && error.contains("revoked from"),
        "{said}"
    );

    let refused_bundle = tmp.path().join("refused.bundle");
    let o = export(&node, &auditor, &refused_bundle);
    refused(&o, "no key of this node may sign an export now");
    assert!(
        !refused_bundle.exists(),
        "nothing is written for a refused export"
    );
    node.stop().expect("stop");

    // A third key brings the site back; its export carries the revocation, and the events
    // signed before it stay valid.
    let o = run(
        &["network", "rotate-key", "clinic-a", "--dir", p(&root)],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let mut node = start(&data, &net);
    let after = tmp.path().join("after.bundle");
    let o = export(&node, &auditor, &after);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    node.stop().expect("stop");
    let o = run(
        &[
            "verify-bundle",
            p(&after),
            "--anchor",
            &fingerprint,
            "--output",
            "json",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(json(&o)["rests_on"]["revocations"], 1);
    assert_eq!(json(&o)["n_events"], 2);

    let o = run(
        &[
            "verify-bundle",
            p(&bundle),
            "--anchor",
            &fingerprint,
            "--output",
            "json",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let verdict = json(&o);
    assert_eq!(verdict["verdict"], "intact");
    assert_eq!(verdict["n_events"], 2);
    assert_eq!(verdict["evidence_complete"], true);
    assert_eq!(
        verdict["rests_on"]["anchor_fingerprint"],
        fingerprint.as_str()
    );
    assert_eq!(verdict["rests_on"]["anchor_from"], "fingerprint");
    assert_eq!(verdict["rests_on"]["revocations"], 0);
    let signed: Vec<(String, u64)> = verdict["rests_on"]["certificates"]
        .as_array()
        .expect("certificates")
        .iter()
        .filter(|c| c["site"] == "clinic-a")
        .map(|c| {
            (
                c["key_fingerprint"].as_str().unwrap_or("").to_owned(),
                c["events_signed"].as_u64().unwrap_or(99),
            )
        })
        .collect();
    assert_eq!(signed, vec![(old_key.clone(), 1), (new_key.clone(), 1)]);
    let o = run(
        &["verify-bundle", p(&bundle), "--anchor", &fingerprint],
        &[],
    );
    let words = String::from_utf8_lossy(&o.stdout);
    assert!(
        words.contains("What was verified, and what it rests on"),
        "{}",
        text(&o)
    );
    assert!(
        words.contains("matches the fingerprint you gave"),
        "{}",
        text(&o)
    );
    assert!(words.contains("The evidence is complete"), "{}", text(&o));

    // The anchor's SECRET key given as the anchor: refused as "cannot be checked" (exit 5),
    // and said so.
    let o = run(
        &[
            "verify-bundle",
            p(&bundle),
            "--anchor",
            p(&root.join("anchor/anchor.key")),
            "--output",
            "json",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert_eq!(json(&o)["findings"][0]["code"], "bundle.anchor_is_secret");

    // The wrong anchor's fingerprint is never intact.
    let other = json(&run(
        &[
            "network",
            "info",
            p(&tmp.path().join("other-net")),
            "--output",
            "json",
        ],
        &[],
    ));
    let other_fp = other["anchor_fingerprint"].as_str().expect("fp");
    let o = run(
        &[
            "verify-bundle",
            p(&bundle),
            "--anchor",
            other_fp,
            "--output",
            "json",
        ],
        &[],
    );
    // Another network's anchor: "cannot be checked" (exit 5), not a break.
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert_eq!(json(&o)["verdict"], "unverifiable");
    assert_eq!(json(&o)["findings"][0]["code"], "bundle.anchor_mismatch");
    assert_eq!(json(&o)["findings"].as_array().map(Vec::len), Some(1));
}

#[test]
fn bad_input_is_refused_with_exit_code_2() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("net");
    let init = |sites: &str| {
        run(
            &[
                "network",
                "init",
                p(&root),
                "--sites",
                sites,
                "--network",
                "prod-net",
            ],
            &[],
        )
    };
    for (sites, says) in [
        ("clinic-a", "is not SITE:ROLE"),
        ("clinic-a:hospital", "the role must be one of"),
        ("clinic-a:clinic,clinic-a:depot", "listed twice"),
        ("Clinic A:clinic", "site"),
    ] {
        let o = init(sites);
        assert_eq!(o.status.code(), Some(2), "{sites}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(says),
            "{sites}: {}",
            text(&o)
        );
        assert!(!root.exists(), "{sites}: nothing is written for bad input");
    }
    let o = init("clinic-a:clinic");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = init("clinic-a:clinic");
    refused(&o, "is not empty");

    let o = run(
        &["network", "rotate-key", "depot-9", "--dir", p(&root)],
        &[],
    );
    refused(&o, "site depot-9 has no certificate");

    // rotate-token takes a node's network directory, not the one init made.
    let o = run(
        &["network", "rotate-token", "clinic-a", "--dir", p(&root)],
        &[],
    );
    refused(&o, "holds no tokens/ directory");
    let node_net = root.join("nodes/clinic-a/network");
    let o = run(
        &["network", "rotate-token", "Clinic A", "--dir", p(&node_net)],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let token_file = node_net.join("tokens/clinic-a.token");
    let before = std::fs::read_to_string(&token_file).expect("token");
    let o = run(
        &[
            "network",
            "rotate-token",
            "clinic-a",
            "--dir",
            p(&node_net),
            "--output",
            "json",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(json(&o)["replaced"], true);
    let after = std::fs::read_to_string(&token_file).expect("token");
    assert_ne!(before, after);
    assert_eq!(after.trim().len(), 64, "{after}");
    assert_eq!(mode(&token_file), 0o600);
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains(after.trim()),
        "the token is never printed"
    );

    // Without the anchor key (moved offline, as advised) rotation says what it needs.
    std::fs::rename(
        root.join("anchor/anchor.key"),
        tmp.path().join("offline.key"),
    )
    .expect("move");
    let o = run(
        &["network", "rotate-key", "clinic-a", "--dir", p(&root)],
        &[],
    );
    refused(&o, "--anchor-key FILE");
    let offline = tmp.path().join("offline.key");
    let o = run(
        &[
            "network",
            "rotate-key",
            "clinic-a",
            "--dir",
            p(&root),
            "--anchor-key",
            p(&offline),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let o = run(&["network", "info", p(tmp.path())], &[]);
    refused(&o, "not a network directory");

    let o = run(
        &["verify-bundle", "x.bundle", "--anchor", "sha256:12ab"],
        &[],
    );
    refused(&o, "64 hex digits");

    // A certificate file that is not signed by the anchor is named.
    std::fs::write(root.join("trust/certs/forged.cert"), b"not a certificate").expect("write");
    let o = run(&["network", "info", p(&root)], &[]);
    refused(&o, "forged.cert");
}

/// Every file appears whole or not at all. A rotation killed at its first write (the
/// file size limit is 0, so the kernel ends it with SIGXFSZ) leaves no half-written
/// certificate: every directory still loads, and the next rotation works. A rotation
/// leaves no `.partial` of its own and keeps the site's key file one whole key, the old
/// one kept under its retired name.
#[test]
fn a_rotation_killed_while_writing_leaves_whole_files_only() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("net");
    let o = init_prod_net(&root, "clinic-a:clinic,depot-1:depot");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let net = root.join("nodes/clinic-a/network");
    let key_path = net.join("sites/clinic-a.key");
    let old_key = std::fs::read_to_string(&key_path).expect("old key");
    let n_certificates = |dir: &Path| {
        let info = run(&["network", "info", p(dir), "--output", "json"], &[]);
        assert_eq!(info.status.code(), Some(0), "{}", text(&info));
        json(&info)["certificates"].as_array().map(Vec::len)
    };

    let killed = Command::new("sh")
        .args(["-c", "ulimit -f 0 && exec \"$0\" \"$@\""])
        .arg(bin("ledger").expect("ledger binary"))
        .args(["network", "rotate-key", "clinic-a", "--dir", p(&root)])
        .output()
        .expect("run ledger under a file size limit");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&killed.status),
        Some(25),
        "expected SIGXFSZ at the first write: {}",
        text(&killed)
    );
    for dir in [&root, &net] {
        assert_eq!(n_certificates(dir), Some(2), "{}", dir.display());
    }
    assert_eq!(
        std::fs::read_to_string(&key_path).expect("key"),
        old_key,
        "the killed run must not touch the key"
    );
    let leftovers: Vec<_> = walk(&root)
        .into_iter()
        .filter(|f| f.extension().is_some_and(|x| x == "partial"))
        .collect();

    let o = run(
        &["network", "rotate-key", "clinic-a", "--dir", p(&root)],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let partials: Vec<_> = walk(&root)
        .into_iter()
        .filter(|f| f.extension().is_some_and(|x| x == "partial") && !leftovers.contains(f))
        .collect();
    assert!(partials.is_empty(), "left behind: {partials:?}");
    let new_key = std::fs::read_to_string(&key_path).expect("new key");
    assert_eq!(new_key.trim().len(), 64, "{new_key:?}");
    assert_ne!(new_key, old_key);
    assert_eq!(mode(&key_path), 0o600);
    let retired = net.join("sites/clinic-a.key.1.retired");
    assert_eq!(
        std::fs::read_to_string(&retired).expect("retired key"),
        old_key
    );
    assert_eq!(mode(&retired), 0o600);
    for dir in [&root, &net] {
        assert_eq!(n_certificates(dir), Some(3), "{}", dir.display());
    }
}

/// Every file under `dir`, recursively.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// `check-config` changes nothing (the development network is made by the first `run`)
/// and finds the files the configuration names but the node could not read.
#[test]
fn check_config_writes_nothing_and_names_unreadable_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let check = |extra: &[&str]| {
        Command::new(bin("ledger-node").expect("ledger-node"))
            .arg("check-config")
            .arg("--data-dir")
            .arg(&data)
            .args(extra)
            .env_remove("LEDGER_CONFIG")
            .output()
            .expect("check-config")
    };
    let o = check(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!(
            "configuration ok: no network at {} yet",
            data.join("network").display()
        )),
        "{}",
        text(&o)
    );
    assert!(!data.exists(), "check-config created {}", data.display());

    let missing = tmp.path().join("absent.pem");
    let o = check(&[
        "--tls-cert-file",
        p(&missing),
        "--tls-key-file",
        p(&missing),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&format!(
            "configuration: tls_cert_file: cannot read {}",
            missing.display()
        )),
        "{}",
        text(&o)
    );
    assert!(!data.exists());

    // What an interrupted first start of an older node left: the check says what `run` would.
    std::fs::create_dir_all(data.join("network")).expect("network dir");
    std::fs::write(data.join("network/anchor.key"), "00\n").expect("stray file");
    let o = check(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("holds files but no anchor.pub is not a complete network"),
        "{}",
        text(&o)
    );
}
