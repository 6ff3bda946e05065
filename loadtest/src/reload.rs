//! The reload scenario's other half: rewriting the gateway's config file
//! while the load runs, so that its file watcher reloads it again and
//! again. Each rewrite replaces the file's trailing block, from its
//! `# loadtest reload N` line on (or adds one), with the next N's:
//!
//! - `comment`: the marker line alone. The bytes change, the meaning does
//!   not: the gateway re-reads and validates the file, finds nothing
//!   changed and keeps its routing snapshot.
//! - `model`: on odd N, also a model `loadtestreload` with no deployment.
//!   Every rewrite changes the config, so the gateway builds and swaps in a
//!   new routing snapshot each time, under load.
//!
//! The file is re-read every time, so edits made meanwhile (by hand or by
//! the gateway's API) are kept, and it is replaced by a rename, so the
//! gateway never reads a half-written file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;

const MARKER: &str = "# loadtest reload ";

/// What each rewrite changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Edit {
    /// A trailing comment line only.
    Comment,
    /// The comment, and a model added and removed in turn.
    Model,
}

/// `text` with its loadtest block (from the last marker line on) replaced
/// by the block of rewrite `n`.
fn with_block(text: &str, n: u64, edit: Edit) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let keep = lines
        .iter()
        .rposition(|l| l.starts_with(MARKER))
        .unwrap_or(lines.len());
    let mut out = lines[..keep].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(&format!("{MARKER}{n}\n"));
    if edit == Edit::Model && n % 2 == 1 {
        out.push_str("[[models]]\nid = \"loadtestreload\"\n");
    }
    out
}

fn rewrite(path: &Path, n: u64, edit: Edit) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".loadtest-tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, with_block(&text, n, edit))
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

/// Rewrites `path` every `every` from `from` until `until`; how many times.
pub(crate) async fn rewrite_every(
    path: PathBuf,
    edit: Edit,
    every: Duration,
    from: Instant,
    until: Instant,
) -> anyhow::Result<u64> {
    let mut n = 0;
    let mut at = from + every;
    while at < until {
        tokio::time::sleep_until(at).await;
        n += 1;
        let path = path.clone();
        // Off the load's thread: file I/O blocks.
        tokio::task::spawn_blocking(move || rewrite(&path, n, edit)).await??;
        at += every;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comment_block_replaces_the_previous_one_and_keeps_everything_else() {
        let original = "[server]\nthreads = 1\n# a comment\n";
        let once = with_block(original, 1, Edit::Comment);
        assert_eq!(once, format!("{original}# loadtest reload 1\n"));
        let twice = with_block(&once, 2, Edit::Comment);
        assert_eq!(twice, format!("{original}# loadtest reload 2\n"));
        assert_eq!(
            with_block("x = 1", 3, Edit::Comment),
            "x = 1\n# loadtest reload 3\n"
        );
        assert_eq!(with_block("", 4, Edit::Comment), "# loadtest reload 4\n");
    }

    #[test]
    fn a_model_block_adds_and_removes_a_model_in_turn() {
        let original = "[[models]]\nid = \"m\"\n";
        let odd = with_block(original, 1, Edit::Model);
        assert_eq!(
            odd,
            format!("{original}# loadtest reload 1\n[[models]]\nid = \"loadtestreload\"\n")
        );
        let even = with_block(&odd, 2, Edit::Model);
        assert_eq!(even, format!("{original}# loadtest reload 2\n"));
        assert_eq!(
            with_block(&even, 3, Edit::Model),
            with_block(&odd, 3, Edit::Model)
        );
    }
}
