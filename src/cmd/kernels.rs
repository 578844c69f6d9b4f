#[derive(clap::Args)] pub struct KernelsArgs {}
pub fn run(_a: KernelsArgs) -> anyhow::Result<()> { Ok(()) }
