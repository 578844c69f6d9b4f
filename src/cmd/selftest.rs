#[derive(clap::Args)] pub struct SelftestArgs {}
pub fn run(_a: SelftestArgs) -> anyhow::Result<()> { Ok(()) }
