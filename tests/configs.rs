//! The shipped stage configs point at files that exist in the repository.

#[test]
fn config_paths_exist() {
    let root = env!("CARGO_MANIFEST_DIR");
    for cfg in ["configs/sft.toml", "configs/rm.toml", "configs/ppo.toml"] {
        let text = std::fs::read_to_string(format!("{root}/{cfg}")).unwrap();
        let mut checked = 0;
        for line in text.lines().filter(|l| l.starts_with("data") || l.starts_with("prompts") || l.starts_with("ptx_data")) {
            for path in line.split('"').skip(1).step_by(2) {
                assert!(std::path::Path::new(&format!("{root}/{path}")).is_file(), "{cfg}: {path} does not exist");
                checked += 1;
            }
        }
        assert!(checked > 0, "{cfg}: no data paths found");
    }
}
