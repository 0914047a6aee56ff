//! Holds a test nats-server (started as the tests start theirs) and prints its pid and
//! port, then sleeps until killed. `tests/tests/nats_harness.rs` runs it and SIGKILLs it to
//! check that a killed test process leaves no server running.

fn main() -> anyhow::Result<()> {
    let server = tests::nats::NatsServer::start()?;
    let pid = server
        .pid()
        .ok_or_else(|| anyhow::anyhow!("the server stopped at once"))?;
    println!("NATS-SERVER {pid} {}", server.port());
    std::thread::sleep(std::time::Duration::from_secs(60));
    Ok(())
}
