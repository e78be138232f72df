//! The `sluice-loader` program, built with the test harness so crash tests can SIGKILL it.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sluice_loader::main().await
}
