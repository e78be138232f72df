//! The `sluicectl` program, built with the test harness so tests drive the real CLI.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    sluicectl::main().await
}
