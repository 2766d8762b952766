//! Private files written whole: a reader (or a crash) sees the old file or the new one, never a
//! half-written one, and nobody but the owner can read either.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
};

use anyhow::Context as _;

/// What [`write_private`] does when `path` already exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Replace it (rename over it).
    Replace,
    /// Keep it and write nothing: the first of several writers racing to create it wins.
    Keep,
}

/// Writes `bytes` to `path` (mode 0600): a temporary file in the same directory (created with
/// `O_EXCL|O_NOFOLLOW`, so a planted file or link is never written through), fsynced, then
/// renamed over `path` ([`Existing::Replace`]) or hard-linked to it ([`Existing::Keep`]), then
/// the directory fsynced so the new name survives a crash. The directory is created (0700) if
/// missing. Returns false when `Keep` found `path` already there. The temporary file is gone
/// when this returns, on success and on error.
pub fn write_private(path: &Path, bytes: &[u8], existing: Existing) -> anyhow::Result<bool> {
    /// Tells apart two writes of this process to the same directory.
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        WRITES.fetch_add(1, Ordering::Relaxed)
    ));
    // A leftover of a crashed process that had our pid (a link is removed, not followed).
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let written = file
        // The umask may have taken bits off 0600 at creation; the owner needs both.
        .set_permissions(fs::Permissions::from_mode(0o600))
        .and_then(|()| file.write_all(bytes))
        .and_then(|()| file.sync_all())
        .and_then(|()| match existing {
            Existing::Replace => fs::rename(&tmp, path).map(|()| true),
            Existing::Keep => match fs::hard_link(&tmp, path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            },
        });
    // After a rename it is gone already; after a link (or an error) this removes it.
    let _ = fs::remove_file(&tmp);
    let created = written.with_context(|| format!("writing {}", path.display()))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    Ok(created)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    fn empty_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("p2pcc-fsutil-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_with_a_private_file_and_leaves_no_temporary() {
        let dir = empty_dir("replace");
        let path = dir.join("records");
        assert!(write_private(&path, b"one", Existing::Replace).unwrap());
        // A file that others could read is replaced by a private one.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(write_private(&path, b"two", Existing::Replace).unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        assert_eq!(names(&dir), ["records"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn keep_leaves_an_existing_file_alone() {
        let dir = empty_dir("keep");
        let path = dir.join("token");
        assert!(write_private(&path, b"first\n", Existing::Keep).unwrap());
        assert!(!write_private(&path, b"second\n", Existing::Keep).unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"first\n");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(names(&dir), ["token"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_error_names_the_file_changes_nothing_and_leaves_no_temporary() {
        let dir = empty_dir("error");
        // A directory where the file should go: the rename fails.
        let path = dir.join("records");
        fs::create_dir_all(path.join("inside")).unwrap();
        let err = write_private(&path, b"data", Existing::Replace).unwrap_err();
        assert!(
            format!("{err:#}").starts_with(&format!("writing {}", path.display())),
            "{err:#}"
        );
        assert!(path.join("inside").is_dir());
        assert_eq!(names(&dir), ["records"]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
