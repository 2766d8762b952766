//! Which local files the API may touch: `share` reads only files under the configured share
//! directories, `fetch` writes only into the download directory, by file name. Every refusal
//! names the rule it broke, and no message carries a local path.

use std::{
    ffi::CString,
    fs, io,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Component, Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;

/// Longest file name `fetch` accepts (NAME_MAX of Linux file systems).
const MAX_NAME_BYTES: usize = 255;

/// The directories the API may read from and write into (canonical paths).
#[derive(Clone, Debug)]
pub struct FilePolicy {
    share_dirs: Vec<PathBuf>,
    /// `O_PATH` handles of `share_dirs` (same order), opened once at start: files are opened
    /// relative to these, never by a path string that could be swapped after the check.
    share_dir_fds: Vec<Arc<OwnedFd>>,
    download_dir: PathBuf,
}

/// A file a `share` request may serve: opened, and checked through the open fd.
#[derive(Debug)]
pub struct SharedOpen {
    pub file: fs::File,
    /// Its file name (the name peers and the API see; never a path).
    pub name: String,
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
        let share_dir_fds = share_dirs
            .iter()
            .map(|d| {
                open_dir_path(d)
                    .map(Arc::new)
                    .with_context(|| format!("opening --share-dir {}", d.display()))
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
            share_dir_fds,
            download_dir,
        })
    }

    pub fn share_dirs(&self) -> &[PathBuf] {
        &self.share_dirs
    }

    pub fn download_dir(&self) -> &Path {
        &self.download_dir
    }

    /// Opens the file a `share` request names: absolute, or relative to a share directory (the
    /// first that has it). Symlinks are resolved to find which share directory holds its real
    /// path; the file is then opened *relative to that directory's handle* with `openat2`
    /// (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, `O_NOFOLLOW`), and the open fd — not the path —
    /// must be a regular file. Someone who can write inside a share directory and swaps a
    /// component for a symlink between the check and the open gets the open refused, not a
    /// file outside. Blocking (file system calls).
    pub fn open_shared(&self, requested: &Path) -> Result<SharedOpen, PathRule> {
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
            let Some((dir, relative)) = self
                .share_dirs
                .iter()
                .zip(&self.share_dir_fds)
                .find_map(|(d, fd)| Some((fd, real.strip_prefix(d).ok()?.to_owned())))
            else {
                refusal = PathRule::OutsideShareDirs;
                continue;
            };
            // Devices, fifos and directories are refused before any open (opening some devices
            // has effects); the open fd is checked again below.
            let meta = fs::metadata(&real).map_err(|e| PathRule::Io(e.kind().to_string()))?;
            if !meta.is_file() || relative.as_os_str().is_empty() {
                return Err(PathRule::NotRegular);
            }
            let file = open_beneath(dir, &relative)?;
            let name = real
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            return Ok(SharedOpen { file, name });
        }
        Err(refusal)
    }

    /// Where a `fetch` with `out` = `name` writes: `name` in the download directory.
    pub fn download_path(&self, name: &str) -> Result<PathBuf, PathRule> {
        check_file_name(name)?;
        Ok(self.download_dir.join(name))
    }
}

/// An `O_PATH` handle of a directory.
fn open_dir_path(dir: &Path) -> io::Result<OwnedFd> {
    let path = CString::new(dir.as_os_str().as_bytes())?;
    // SAFETY: a valid NUL-terminated path; a non-negative result is a new fd we own.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd from open(2).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens `relative` for reading beneath `dir` with no symlink anywhere on the way (`openat2`,
/// Linux ≥ 5.6), never blocking on a fifo; the open fd must be a regular file.
fn open_beneath(dir: &OwnedFd, relative: &Path) -> Result<fs::File, PathRule> {
    let path = CString::new(relative.as_os_str().as_bytes()).map_err(|_| PathRule::Nul)?;
    // SAFETY: open_how is plain integers; all-zero is valid (then filled below).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: a valid dirfd, NUL-terminated path and open_how of the size passed; a
    // non-negative result is a new fd we own.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            path.as_ptr(),
            &raw const how,
            size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            // A symlink or a way out appeared since the path was checked.
            Some(libc::ELOOP | libc::EXDEV) => PathRule::OutsideShareDirs,
            Some(libc::ENOENT | libc::ENOTDIR) => PathRule::NotFound,
            _ => PathRule::Io(e.kind().to_string()),
        });
    }
    // SAFETY: fresh fd from openat2(2).
    let file = fs::File::from(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    let meta = file
        .metadata()
        .map_err(|e| PathRule::Io(e.kind().to_string()))?;
    if !meta.is_file() {
        return Err(PathRule::NotRegular);
    }
    Ok(file)
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

    impl SharedOpen {
        /// `/proc/self/fd/N`: reads what the open fd refers to.
        fn path_of_fd(&self) -> PathBuf {
            PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
        }
    }

    impl FilePolicy {
        /// The rule an `open_shared` refusal names, or `Ok` with the opened file's name.
        fn share_path_rule(&self, requested: &Path) -> Result<String, PathRule> {
            self.open_shared(requested).map(|o| o.name)
        }
    }

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
            none.share_path_rule(&shared.join("sub/a.bin")),
            Err(PathRule::SharingDisabled)
        );

        let policy = FilePolicy::new(std::slice::from_ref(&shared), &root.join("dl")).unwrap();
        for path in [
            shared.join("sub/a.bin"),
            "sub/a.bin".into(),
            "link-in".into(),
        ] {
            let opened = policy.open_shared(&path).unwrap();
            assert_eq!(opened.name, "a.bin");
            assert_eq!(fs::read_to_string(opened.path_of_fd()).unwrap(), "a");
        }
        assert_eq!(
            policy.share_path_rule(&root.join("secret")),
            Err(PathRule::OutsideShareDirs)
        );
        assert_eq!(
            policy.share_path_rule(Path::new("/etc/shadow")),
            Err(PathRule::OutsideShareDirs)
        );
        assert_eq!(
            policy.share_path_rule(Path::new("link-out")),
            Err(PathRule::OutsideShareDirs)
        );
        assert_eq!(
            policy.share_path_rule(Path::new("dir-out/secret")),
            Err(PathRule::OutsideShareDirs)
        );
        assert_eq!(
            policy.share_path_rule(Path::new("sub/../../secret")),
            Err(PathRule::DotDot)
        );
        assert_eq!(
            policy.share_path_rule(Path::new("sub")),
            Err(PathRule::NotRegular)
        );
        assert_eq!(
            policy.share_path_rule(Path::new("nope")),
            Err(PathRule::NotFound)
        );
        // A device file under a share dir is refused too.
        std::os::unix::fs::symlink("/dev/zero", shared.join("zero")).unwrap();
        assert_eq!(
            policy.share_path_rule(Path::new("zero")),
            Err(PathRule::OutsideShareDirs)
        );
        let dev_policy = FilePolicy::new(&[PathBuf::from("/dev")], &root.join("dl")).unwrap();
        assert_eq!(
            dev_policy.share_path_rule(Path::new("zero")),
            Err(PathRule::NotRegular)
        );

        // The race: the path checked, then a directory on it swapped for a symlink out before
        // the open. The open through the share dir's handle refuses; nothing outside is read.
        fs::create_dir_all(root.join("elsewhere")).unwrap();
        fs::write(root.join("elsewhere/a.bin"), b"secret").unwrap();
        let relative = fs::canonicalize(shared.join("sub/a.bin"))
            .unwrap()
            .strip_prefix(fs::canonicalize(&shared).unwrap())
            .unwrap()
            .to_owned();
        fs::rename(shared.join("sub"), root.join("sub-moved")).unwrap();
        std::os::unix::fs::symlink(root.join("elsewhere"), shared.join("sub")).unwrap();
        assert_eq!(
            open_beneath(&policy.share_dir_fds[0], &relative).map(drop),
            Err(PathRule::OutsideShareDirs)
        );
        fs::remove_file(shared.join("sub")).unwrap();
        std::os::unix::fs::symlink("../elsewhere", shared.join("sub")).unwrap();
        assert_eq!(
            open_beneath(&policy.share_dir_fds[0], &relative).map(drop),
            Err(PathRule::OutsideShareDirs)
        );
        // A fifo planted under the share dir: refused without blocking.
        fs::remove_file(shared.join("sub")).unwrap();
        fs::rename(root.join("sub-moved"), shared.join("sub")).unwrap();
        let fifo = CString::new(shared.join("fifo").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert_eq!(
            policy.open_shared(Path::new("fifo")).map(drop),
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

/// Fuzz target (see `crate::fuzz`): the `path` of `POST /api/files` and the `out` of
/// `POST /api/files/fetch`, against a share directory with symlinks pointing out of it.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;
    use crate::fuzz::for_a_while;

    /// Paths assembled from the pieces that matter (`..`, `.`, `/`, NUL, symlinks in and out,
    /// absolute prefixes) and arbitrary text.
    fn paths() -> impl Strategy<Value = String> {
        let piece = proptest::sample::select(vec![
            "..",
            ".",
            "",
            "a.bin",
            "sub",
            "link-in",
            "link-out",
            "dir-out",
            "secret",
            "zero",
            "fifo",
            "nul\0",
            "/etc/passwd",
            "/",
            "//",
            "x\u{0}y",
            "dl",
            "..a",
            "a..",
        ]);
        let joined = (any::<bool>(), proptest::collection::vec(piece, 0..6)).prop_map(
            |(absolute, pieces)| {
                let p = pieces.join("/");
                if absolute { format!("/{p}") } else { p }
            },
        );
        prop_oneof![3 => joined, 1 => ".{0,40}"]
    }

    #[test]
    fn share_paths_and_download_names() {
        let root = std::env::temp_dir().join(format!("p2pcc-fuzz-confine-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let shared = root.join("shared");
        fs::create_dir_all(shared.join("sub")).unwrap();
        fs::write(shared.join("sub/a.bin"), b"a").unwrap();
        fs::write(shared.join("a.bin"), b"a").unwrap();
        fs::write(root.join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(root.join("secret"), shared.join("link-out")).unwrap();
        std::os::unix::fs::symlink(shared.join("sub/a.bin"), shared.join("link-in")).unwrap();
        std::os::unix::fs::symlink(&root, shared.join("dir-out")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", shared.join("zero")).unwrap();
        let policy = FilePolicy::new(std::slice::from_ref(&shared), &root.join("dl")).unwrap();
        let real_shared = fs::canonicalize(&shared).unwrap();
        for_a_while("share paths and download names", paths(), |path| {
            if let Ok(opened) = policy.open_shared(Path::new(&path)) {
                // Whatever opens is a regular file under the share directory.
                let target =
                    fs::read_link(format!("/proc/self/fd/{}", opened.file.as_raw_fd())).unwrap();
                prop_assert!(
                    target.starts_with(&real_shared),
                    "{path:?} opened {target:?}"
                );
                prop_assert!(opened.file.metadata().unwrap().is_file());
                prop_assert!(!opened.name.contains('/'));
            }
            if let Ok(out) = policy.download_path(&path) {
                // A fetch writes exactly `path`, as a name, in the download directory.
                prop_assert_eq!(out.parent(), Some(policy.download_dir()));
                prop_assert_eq!(
                    out.file_name().and_then(|n| n.to_str()),
                    Some(path.as_str())
                );
                prop_assert!(path != "." && path != "..");
            }
            Ok(())
        });
        let _ = fs::remove_dir_all(&root);
    }
}
