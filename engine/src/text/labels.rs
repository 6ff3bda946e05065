//! A classifier's label names and its logits turned into scores.
//!
//! The names come from the `config.json` a Hugging Face export ships beside
//! the model (`"id2label": {"0": "negative", "1": "positive"}`). Without
//! one, labels are named `LABEL_0`, `LABEL_1`, ... as Hugging Face names
//! them when a config has none.

use std::collections::BTreeMap;
use std::path::Path;

use crate::backend::LabelScore;

/// Why a classifier's label names could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LabelsError {
    /// The file exists but could not be read.
    #[error("cannot read it: {0}")]
    Read(std::io::Error),
    /// It is not JSON, or its `id2label` is not an object of strings.
    #[error("not a model config with an `id2label` object of strings: {0}")]
    Json(serde_json::Error),
    /// `id2label` does not name exactly the model's labels `0..count`.
    #[error("its `id2label` must name labels 0 to {last} (the model gives {count} logits), got ids {ids:?}", last = count.saturating_sub(1))]
    Ids {
        /// Logits per text the model gives.
        count: usize,
        /// The keys of `id2label`.
        ids: Vec<String>,
    },
}

#[derive(serde::Deserialize)]
struct Config {
    id2label: Option<BTreeMap<String, String>>,
}

/// The names of a classifier's `count` labels, by index, from `config`
/// (a Hugging Face `config.json`); `LABEL_{i}` when the file or its
/// `id2label` is missing.
pub fn read(config: &Path, count: usize) -> Result<Vec<String>, LabelsError> {
    let text = match std::fs::read_to_string(config) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(default_names(count)),
        Err(e) => return Err(LabelsError::Read(e)),
    };
    let Some(id2label) = serde_json::from_str::<Config>(&text)
        .map_err(LabelsError::Json)?
        .id2label
    else {
        return Ok(default_names(count));
    };
    // Keys are decimal strings ("0", "1", ...): every index once, no other.
    let wrong_ids = || LabelsError::Ids {
        count,
        ids: id2label.keys().cloned().collect(),
    };
    let mut names = vec![None; count];
    for (id, name) in &id2label {
        let slot = id.parse::<usize>().ok().and_then(|i| names.get_mut(i));
        match slot {
            Some(slot) if slot.is_none() => *slot = Some(name.clone()),
            _ => return Err(wrong_ids()),
        }
    }
    names
        .into_iter()
        .collect::<Option<_>>()
        .ok_or_else(wrong_ids)
}

/// `LABEL_0` .. `LABEL_{count-1}`.
pub fn default_names(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("LABEL_{i}")).collect()
}

/// Each label with the softmax of its logit, highest first (ties keep the
/// labels' order).
pub fn scores(logits: &[f32], names: &[String]) -> Vec<LabelScore> {
    // Shifted by the largest logit so that exp cannot overflow; summed in
    // f64 so that many labels lose no precision.
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = logits.iter().map(|&l| f64::from(l - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    let mut scored: Vec<LabelScore> = names
        .iter()
        .zip(&exps)
        .map(|(label, e)| LabelScore {
            label: label.clone(),
            score: (e / sum) as f32,
        })
        .collect();
    scored.sort_by(|a, b| b.score.total_cmp(&a.score));
    scored
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, json).unwrap();
        (dir, path)
    }

    #[test]
    fn id2label_names_the_labels_in_index_order() {
        let (_dir, path) = config(
            r#"{"model_type": "bert", "id2label": {"1": "positive", "0": "negative", "10": "x"}}"#,
        );
        let err = read(&path, 2).unwrap_err();
        assert!(
            err.to_string()
                .contains("must name labels 0 to 1 (the model gives 2 logits)"),
            "{err}"
        );
        let names: Vec<String> = (0..11).map(|i| format!("n{i}")).collect();
        let json = serde_json::json!({
            "id2label": names.iter().enumerate().map(|(i, n)| (i.to_string(), n)).collect::<BTreeMap<_, _>>()
        });
        let (_dir, path) = config(&json.to_string());
        // BTreeMap order is "0", "1", "10", "2", ...: placed by index, not order.
        assert_eq!(read(&path, 11).unwrap(), names);
    }

    #[test]
    fn missing_names_default_and_bad_ones_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let absent = dir.path().join("config.json");
        assert_eq!(read(&absent, 2).unwrap(), ["LABEL_0", "LABEL_1"]);
        let (_dir, path) = config(r#"{"model_type": "bert"}"#);
        assert_eq!(read(&path, 1).unwrap(), ["LABEL_0"]);
        for bad in [
            "not json",
            r#"{"id2label": ["a", "b"]}"#,
            r#"{"id2label": {"0": 1}}"#,
        ] {
            let (_dir, path) = config(bad);
            assert!(matches!(read(&path, 2), Err(LabelsError::Json(_))), "{bad}");
        }
        for ids in [
            r#"{"0": "a"}"#,
            r#"{"0": "a", "1": "b", "2": "c"}"#,
            r#"{"0": "a", "x": "b"}"#,
            r#"{"0": "a", "00": "b"}"#,
        ] {
            let (_dir, path) = config(&format!(r#"{{"id2label": {ids}}}"#));
            assert!(
                matches!(read(&path, 2), Err(LabelsError::Ids { .. })),
                "{ids}"
            );
        }
    }

    #[test]
    fn scores_are_a_softmax_sorted_best_first() {
        let names = default_names(3);
        let s = scores(&[0.0, 2.0, 0.0], &names);
        let order: Vec<&str> = s.iter().map(|l| l.label.as_str()).collect();
        assert_eq!(
            order,
            ["LABEL_1", "LABEL_0", "LABEL_2"],
            "ties keep index order"
        );
        let e2 = 2f64.exp();
        assert!((f64::from(s[0].score) - e2 / (e2 + 2.0)).abs() < 1e-7);
        assert!((s.iter().map(|l| l.score).sum::<f32>() - 1.0).abs() < 1e-6);
        // Huge logits do not overflow.
        let s = scores(&[1000.0, 999.0], &default_names(2));
        assert!(s.iter().all(|l| l.score.is_finite()) && s[0].score > s[1].score);
    }
}
