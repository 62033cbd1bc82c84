use std::io;
use std::path::{Path, PathBuf};

use super::ObserveError;
use crate::model::IfaceName;
use crate::plan::IpFamily;

/// `<root>/net/ipv{4,6}/conf/{<device>|all}/forwarding`.
pub fn forwarding_path(root: &Path, family: IpFamily, device: Option<&IfaceName>) -> PathBuf {
    let fam = match family {
        IpFamily::V4 => "ipv4",
        IpFamily::V6 => "ipv6",
    };
    let dev = device.map_or("all", IfaceName::as_str);
    root.join("net")
        .join(fam)
        .join("conf")
        .join(dev)
        .join("forwarding")
}

/// `None` when the knob does not exist (IPv6 disabled, device gone).
pub fn read_forwarding(
    root: &Path,
    family: IpFamily,
    device: Option<&IfaceName>,
) -> Result<Option<bool>, ObserveError> {
    let path = forwarding_path(root, family, device);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s.trim() != "0")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ObserveError::ReadSysctl { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarding_knobs_are_read_per_device_and_missing_ones_are_none() {
        let root = tempfile::tempdir().unwrap();
        let wg0: IfaceName = "wg0".parse().unwrap();
        let p = forwarding_path(root.path(), IpFamily::V4, Some(&wg0));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "1\n").unwrap();
        assert_eq!(
            read_forwarding(root.path(), IpFamily::V4, Some(&wg0)).unwrap(),
            Some(true)
        );
        assert_eq!(
            read_forwarding(root.path(), IpFamily::V6, Some(&wg0)).unwrap(),
            None
        );
        assert!(p.ends_with("net/ipv4/conf/wg0/forwarding"));
    }
}
