//! `sluicectl`: the sluice admin CLI. See `sluicectl --help`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    sluicectl::main().await
}
