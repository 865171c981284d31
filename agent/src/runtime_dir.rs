//! The agent's runtime folder: creating it private and rejecting one that
//! another user could tamper with.
//!
//! The folder holds the socket and the instance lock. Anyone who can write
//! to it could replace the socket and collect credentials, so the agent
//! only uses a real folder (not a symbolic link) that the current user owns
//! with no group or other permission bits.

use std::fs::{DirBuilder, Metadata};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// An unusable runtime folder. Each message names the path, what is wrong
/// with it and the fix.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeDirError {
    #[error(
        "the runtime folder `{path}` is a symbolic link; the agent only uses a real folder. Remove the link (`rm {path}`) or set TOLLGATE_RUNTIME_DIR to a private folder",
        path = path.display()
    )]
    Symlink { path: PathBuf },
    #[error(
        "the runtime folder `{path}` is not a folder; remove it or set TOLLGATE_RUNTIME_DIR to a private folder",
        path = path.display()
    )]
    NotAFolder { path: PathBuf },
    #[error(
        "the runtime folder `{path}` is owned by uid {owner}, not by you (uid {uid}); remove it or set TOLLGATE_RUNTIME_DIR to a folder you own",
        path = path.display()
    )]
    WrongOwner { path: PathBuf, owner: u32, uid: u32 },
    #[error(
        "the runtime folder `{path}` has mode {mode:04o}, which lets group or others in; run `chmod 700 {path}`",
        path = path.display()
    )]
    OpenMode { path: PathBuf, mode: u32 },
    #[error("could not create the runtime folder `{path}`: {source}", path = path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not inspect the runtime folder `{path}`: {source}", path = path.display())]
    Inspect {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Creates `path` with mode 0700 if it is missing, then checks that it is a
/// real folder owned by `uid` and closed to group and others.
pub fn prepare(path: &Path, uid: u32) -> Result<(), RuntimeDirError> {
    match std::fs::symlink_metadata(path) {
        Ok(metadata) => check(path, &metadata, uid),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            create(path)?;
            let metadata =
                std::fs::symlink_metadata(path).map_err(|source| RuntimeDirError::Inspect {
                    path: path.to_path_buf(),
                    source,
                })?;
            // Check again: in a shared folder such as /tmp another user could
            // have created the path between the lookup and the creation.
            check(path, &metadata, uid)
        }
        Err(source) => Err(RuntimeDirError::Inspect {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn create(path: &Path) -> Result<(), RuntimeDirError> {
    if let Some(parent) = path.parent() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|source| RuntimeDirError::Create {
                path: parent.to_path_buf(),
                source,
            })?;
    }
    match DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {
            tracing::info!(path = %path.display(), "created the runtime folder");
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(RuntimeDirError::Create {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Checks an existing entry's type, owner and mode.
pub fn check(path: &Path, metadata: &Metadata, uid: u32) -> Result<(), RuntimeDirError> {
    let path = path.to_path_buf();
    if metadata.file_type().is_symlink() {
        return Err(RuntimeDirError::Symlink { path });
    }
    if !metadata.is_dir() {
        return Err(RuntimeDirError::NotAFolder { path });
    }
    if metadata.uid() != uid {
        return Err(RuntimeDirError::WrongOwner {
            path,
            owner: metadata.uid(),
            uid,
        });
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(RuntimeDirError::OpenMode { path, mode });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid() -> u32 {
        rustix::process::getuid().as_raw()
    }

    #[test]
    fn missing_folder_created_private() {
        let base = tempfile::tempdir().unwrap();
        let path = base.path().join("nested").join("tollgate");
        prepare(&path, uid()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn world_writable_folder_rejected() {
        let base = tempfile::tempdir().unwrap();
        let path = base.path().join("open");
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        let message = prepare(&path, uid()).unwrap_err().to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("has mode 0777"), "{message}");
        assert!(
            message.contains(&format!("chmod 700 {}", path.display())),
            "{message}"
        );
    }

    #[test]
    fn group_readable_folder_rejected() {
        let base = tempfile::tempdir().unwrap();
        let path = base.path().join("group");
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o750)).unwrap();
        assert!(matches!(
            prepare(&path, uid()),
            Err(RuntimeDirError::OpenMode { mode: 0o750, .. })
        ));
    }

    #[test]
    fn symlink_rejected() {
        let base = tempfile::tempdir().unwrap();
        let target = base.path().join("real");
        std::fs::create_dir(&target).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = base.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let message = prepare(&link, uid()).unwrap_err().to_string();
        assert!(message.contains("is a symbolic link"), "{message}");
        assert!(message.contains(&link.display().to_string()), "{message}");
    }

    #[test]
    fn other_owner_rejected() {
        let base = tempfile::tempdir().unwrap();
        let path = base.path().join("mine");
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();
        let someone_else = uid() + 1;
        let message = prepare(&path, someone_else).unwrap_err().to_string();
        assert!(
            message.contains(&format!("owned by uid {}", uid())),
            "{message}"
        );
        assert!(
            message.contains(&format!("not by you (uid {someone_else})")),
            "{message}"
        );
    }

    #[test]
    fn regular_file_rejected() {
        let base = tempfile::tempdir().unwrap();
        let path = base.path().join("file");
        std::fs::write(&path, b"").unwrap();
        assert!(matches!(
            prepare(&path, uid()),
            Err(RuntimeDirError::NotAFolder { .. })
        ));
    }
}
