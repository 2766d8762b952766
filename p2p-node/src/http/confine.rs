//! Which local files the API may touch: `share` reads only files under the configured share
//! directories, `fetch` writes only into the download directory, by file name. Every refusal
//! names the rule it broke, and no message carries a local path.

use std::{
    fs, io,
    os::unix::ffi::OsStrExt as _,
    path::{Component, Path, PathBuf},
};

use anyhow::Context as _;

/// Longest file name `fetch` accepts (NAME_MAX of Linux file systems).
const MAX_NAME_BYTES: usize = 255;

/// The directories the API may read from and write into (canonical paths).
#[derive(Clone, Debug)]
pub struct FilePolicy {
    share_dirs: Vec<PathBuf>,
    download_dir: PathBuf,
}

/// Why a path in a request was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathRule {
    #[error(
        "sharing by path is disabled on this node: start it with --share-dir <dir> (repeatable) to share the files under a directory"
    )]
    SharingDisabled,
    #[error("a path or name containing a NUL byte is refused")]
    Nul,
    #[error("`..` is refused in paths and names")]
    DotDot,
    #[error(
        "the file is not under a share directory (--share-dir); symlinks out of it are not followed"
    )]
    OutsideShareDirs,
    #[error("no such file under the share directories")]
    NotFound,
    #[error("not a regular file: directories, devices, fifos and sockets are refused")]
    NotRegular,
    #[error(
        "`out` must be a file name, not an absolute path: the node writes only into its download directory (--download-dir)"
    )]
    Absolute,
    #[error(
        "`out` must be a file name without `/`: the node writes only into its download directory (--download-dir)"
    )]
    NotAName,
    #[error("`out` is empty: give a file name")]
    Empty,
    #[error("`out` is longer than {MAX_NAME_BYTES} bytes")]
    TooLong,
    #[error("reading the file: {0}")]
    Io(String),
}

impl FilePolicy {
    /// Checks and canonicalizes the directories; creates the download directory (mode 0750) if
    /// it does not exist.
    pub fn new(share_dirs: &[PathBuf], download_dir: &Path) -> anyhow::Result<Self> {
        let share_dirs = share_dirs
            .iter()
            .map(|d| {
                let real =
                    fs::canonicalize(d).with_context(|| format!("--share-dir {}", d.display()))?;
                anyhow::ensure!(
                    real.is_dir(),
                    "--share-dir {} is not a directory",
                    d.display()
                );
                Ok(real)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        {
            use std::os::unix::fs::DirBuilderExt as _;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(download_dir)
                .with_context(|| {
                    format!("creating the download directory {}", download_dir.display())
                })?;
        }
        let download_dir = fs::canonicalize(download_dir)
            .with_context(|| format!("--download-dir {}", download_dir.display()))?;
        Ok(Self {
            share_dirs,
            download_dir,
        })
    }

    pub fn share_dirs(&self) -> &[PathBuf] {
        &self.share_dirs
    }

    pub fn download_dir(&self) -> &Path {
        &self.download_dir
    }

    /// The real path of a file a `share` request names: absolute, or relative to a share
    /// directory (the first that has it). Its real location (symlinks resolved) must be under a
    /// share directory and it must be a regular file. Blocking (file system calls).
    pub fn share_path(&self, requested: &Path) -> Result<PathBuf, PathRule> {
        if self.share_dirs.is_empty() {
            return Err(PathRule::SharingDisabled);
        }
        if requested.as_os_str().as_bytes().contains(&0) {
            return Err(PathRule::Nul);
        }
        if requested.components().any(|c| c == Component::ParentDir) {
            return Err(PathRule::DotDot);
        }
        let candidates: Vec<PathBuf> = if requested.is_absolute() {
            vec![requested.to_owned()]
        } else {
            self.share_dirs.iter().map(|d| d.join(requested)).collect()
        };
        let mut refusal = PathRule::NotFound;
        for candidate in candidates {
            let real = match fs::canonicalize(&candidate) {
                Ok(real) => real,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(PathRule::Io(e.kind().to_string())),
            };
            if !self.share_dirs.iter().any(|d| real.starts_with(d)) {
                refusal = PathRule::OutsideShareDirs;
                continue;
            }
            let meta = fs::metadata(&real).map_err(|e| PathRule::Io(e.kind().to_string()))?;
            if !meta.is_file() {
                return Err(PathRule::NotRegular);
            }
            return Ok(real);
        }
        Err(refusal)
    }

    /// Where a `fetch` with `out` = `name` writes: `name` in the download directory.
    pub fn download_path(&self, name: &str) -> Result<PathBuf, PathRule> {
        check_file_name(name)?;
        Ok(self.download_dir.join(name))
    }
}

/// A plain file name: not empty, no `/`, no NUL, not `.` or `..`, at most 255 bytes.
pub fn check_file_name(name: &str) -> Result<(), PathRule> {
    if name.is_empty() {
        return Err(PathRule::Empty);
    }
    if name.contains('\0') {
        return Err(PathRule::Nul);
    }
    if name.starts_with('/') {
        return Err(PathRule::Absolute);
    }
    if name.split('/').any(|part| part == "..") {
        return Err(PathRule::DotDot);
    }
    if name.contains('/') || name == "." {
        return Err(PathRule::NotAName);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(PathRule::TooLong);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("p2pcc-confine-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn file_names_only() {
        assert_eq!(check_file_name("a.bin"), Ok(()));
        assert_eq!(check_file_name(".hidden"), Ok(()));
        assert_eq!(check_file_name(""), Err(PathRule::Empty));
        assert_eq!(check_file_name("/etc/cron.d/x"), Err(PathRule::Absolute));
        assert_eq!(check_file_name(".."), Err(PathRule::DotDot));
        assert_eq!(check_file_name("../x"), Err(PathRule::DotDot));
        assert_eq!(check_file_name("a/../../x"), Err(PathRule::DotDot));
        assert_eq!(check_file_name("a/b"), Err(PathRule::NotAName));
        assert_eq!(check_file_name("."), Err(PathRule::NotAName));
        assert_eq!(check_file_name("a\0b"), Err(PathRule::Nul));
        assert_eq!(check_file_name(&"x".repeat(256)), Err(PathRule::TooLong));
    }

    #[test]
    fn share_paths_stay_under_the_share_dirs() {
        let root = temp("share");
        let shared = root.join("shared");
        fs::create_dir_all(shared.join("sub")).unwrap();
        fs::write(shared.join("sub/a.bin"), b"a").unwrap();
        fs::write(root.join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(root.join("secret"), shared.join("link-out")).unwrap();
        std::os::unix::fs::symlink(shared.join("sub/a.bin"), shared.join("link-in")).unwrap();
        std::os::unix::fs::symlink(&root, shared.join("dir-out")).unwrap();

        let none = FilePolicy::new(&[], &root.join("dl")).unwrap();
        assert_eq!(
            none.share_path(&shared.join("sub/a.bin")),
            Err(PathRule::SharingDisabled)
        );

        let policy = FilePolicy::new(std::slice::from_ref(&shared), &root.join("dl")).unwrap();
        let real = fs::canonicalize(shared.join("sub/a.bin")).unwrap();
        assert_eq!(
            policy.share_path(&shared.join("sub/a.bin")),
            Ok(real.clone())
        );
        assert_eq!(policy.share_path(Path::new("sub/a.bin")), Ok(real.clone()));
        assert_eq!(policy.share_path(Path::new("link-in")), Ok(real));
        assert_eq!(
            policy.share_path(&root.join("secret")),
            Err(PathRule::OutsideShareDirs)
        );
        assert_eq!(
            policy.share_path(Path::new("/etc/shadow")),
            Err(PathRule::OutsideShareDirs)
        );
        assert_eq!(
            policy.share_path(Path::new("link-out")),
            Err(PathRule::OutsideShareDirs)
        );
        assert_eq!(
            policy.share_path(Path::new("dir-out/secret")),
            Err(PathRule::OutsideShareDirs)
        );
        assert_eq!(
            policy.share_path(Path::new("sub/../../secret")),
            Err(PathRule::DotDot)
        );
        assert_eq!(
            policy.share_path(Path::new("sub")),
            Err(PathRule::NotRegular)
        );
        assert_eq!(
            policy.share_path(Path::new("nope")),
            Err(PathRule::NotFound)
        );
        // A device file under a share dir is refused too.
        std::os::unix::fs::symlink("/dev/zero", shared.join("zero")).unwrap();
        assert_eq!(
            policy.share_path(Path::new("zero")),
            Err(PathRule::OutsideShareDirs)
        );
        let dev_policy = FilePolicy::new(&[PathBuf::from("/dev")], &root.join("dl")).unwrap();
        assert_eq!(
            dev_policy.share_path(Path::new("zero")),
            Err(PathRule::NotRegular)
        );

        // Downloads go into the download directory, created 0750.
        use std::os::unix::fs::MetadataExt as _;
        assert_eq!(fs::metadata(root.join("dl")).unwrap().mode() & 0o777, 0o750);
        assert_eq!(
            policy.download_path("x.bin").unwrap(),
            fs::canonicalize(root.join("dl")).unwrap().join("x.bin")
        );
        fs::remove_dir_all(&root).unwrap();
    }
}
