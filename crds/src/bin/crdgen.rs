//! Writes the CRDs generated from the Rust types.
//!
//! `crdgen` prints them; `crdgen --write` updates the checked-in copies
//! (`crds/generated/`, the Helm chart's `crds/` folder when the chart exists, and
//! the field reference `docs/api.md`).

use std::path::Path;

fn main() -> std::io::Result<()> {
    let yaml = kwire_crds::crd::to_yaml(&kwire_crds::crd::all());
    if std::env::args().any(|a| a == "--write") {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        std::fs::write(
            root.join(kwire_crds::docs::API_DOC_PATH),
            kwire_crds::docs::api_reference(),
        )?;
        eprintln!("wrote {}", kwire_crds::docs::API_DOC_PATH);
        for target in [
            kwire_crds::crd::GENERATED_PATH,
            "charts/kwire/crds/kwire.dev.yaml",
        ] {
            let path = root.join(target);
            if target.starts_with("charts/") && !root.join("charts/kwire/Chart.yaml").exists() {
                continue;
            }
            std::fs::create_dir_all(path.parent().expect("a file has a folder"))?;
            std::fs::write(&path, &yaml)?;
            eprintln!("wrote {target}");
        }
    } else {
        print!("{yaml}");
    }
    Ok(())
}
