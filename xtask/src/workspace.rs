//! Where the project lives: the workspace root every command builds in and
//! writes under. A module of its own so that no command module has to
//! reach back into the crate root (main.rs, which dispatches to them all).

use std::path::PathBuf;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}
