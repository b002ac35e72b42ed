//! Replacing a system file (resolv.conf, a CA bundle) safely.
//!
//! The normal way is atomic: write a temporary file next to the target, then `rename(2)`
//! it over the target, so a reader sees the old or the new file, never half of one. That
//! is impossible when the target is itself a mount point (container engines bind-mount
//! `/etc/resolv.conf`, `/etc/hosts` and `/etc/hostname`; tests bind-mount per-test
//! copies): `rename` fails with `EBUSY`. Then the file is written through in place. The
//! mount table is read first so that no temporary file is even created next to a
//! bind-mounted file (the directory it would land in may belong to someone else); an
//! `EBUSY` from `rename` is still handled the same way.
//!
//! Written files end up owned by root with the requested mode.

#![forbid(unsafe_code)]

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// How a file was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMethod {
    /// Temporary file renamed over the target.
    Renamed,
    /// Written through in place (the target is a mount point).
    InPlace,
}

/// The mount points listed in a `/proc/self/mountinfo` text (field 5, unescaped).
pub fn mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_octal(field)))
        .collect()
}

/// Undoes the kernel's `\ooo` escaping of space, tab, newline and backslash.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') as u32 * 64
                + (bytes[i + 2] - b'0') as u32 * 8
                + (bytes[i + 3] - b'0') as u32;
            if let Ok(b) = u8::try_from(v) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// True if `path` is a mount point in this process's mount namespace. The mount table is
/// read once (the shim mounts nothing, and the table can be long).
pub fn is_mount_point(path: &Path) -> bool {
    static MOUNT_POINTS: OnceLock<Vec<PathBuf>> = OnceLock::new();
    MOUNT_POINTS
        .get_or_init(|| {
            fs::read_to_string("/proc/self/mountinfo")
                .map(|text| mount_points(&text))
                .unwrap_or_default()
        })
        .iter()
        .any(|m| m == path)
}

/// Replaces the contents of `path` with `contents`, owned by root with `mode`: atomically
/// by rename, or in place if `path` is a mount point.
pub fn replace(path: &Path, contents: &[u8], mode: u32) -> io::Result<WriteMethod> {
    if is_mount_point(path) {
        write_in_place(path, contents, mode)?;
        return Ok(WriteMethod::InPlace);
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.bottleneck-{}", std::process::id()));
    let written = (|| {
        // A leftover of an earlier run with the same pid (a restarted container).
        let _ = fs::remove_file(&tmp);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(contents)?;
        finish(&file, mode)?;
        fs::rename(&tmp, path)
    })();
    match written {
        Ok(()) => Ok(WriteMethod::Renamed),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            if e.raw_os_error() == Some(nix::libc::EBUSY) {
                write_in_place(path, contents, mode)?;
                Ok(WriteMethod::InPlace)
            } else {
                Err(e)
            }
        }
    }
}

fn write_in_place(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .truncate(true)
        .create(true)
        .mode(mode)
        .open(path)?;
    file.write_all(contents)?;
    finish(&file, mode)
}

/// Root ownership and the exact mode (the umask may have narrowed it).
fn finish(file: &File, mode: u32) -> io::Result<()> {
    std::os::unix::fs::fchown(file, Some(0), Some(0))?;
    file.set_permissions(fs::Permissions::from_mode(mode))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_mount_points_are_unescaped() {
        let text = "\
22 1 0:21 / / rw,relatime - ext4 /dev/root rw
530 22 0:21 /tmp/lab/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/root rw
531 22 0:21 /x /mnt/with\\040space rw - ext4 /dev/root rw
532 22 0:21 /x /mnt/back\\134slash rw - ext4 /dev/root rw
";
        let points = mount_points(text);
        assert_eq!(
            points,
            vec![
                PathBuf::from("/"),
                PathBuf::from("/etc/resolv.conf"),
                PathBuf::from("/mnt/with space"),
                PathBuf::from("/mnt/back\\slash"),
            ]
        );
    }

    #[test]
    fn unescape_leaves_odd_backslashes() {
        assert_eq!(unescape_octal("a\\0"), "a\\0");
        assert_eq!(unescape_octal("a\\999"), "a\\999");
        assert_eq!(unescape_octal("\\011x"), "\tx");
    }
}
