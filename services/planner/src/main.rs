//! `sluice-planner`: see the crate docs of `sluice_planner`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sluice_planner::main().await
}
