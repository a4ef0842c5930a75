//! Loading, compiling and analysing rules.
//!
//! A [`RuleSet`] is the compiled YARA-X [`yara_x::Rules`] together with the
//! [`RuleAnalysis`] of the same sources. Rules come from strings, files, or
//! directories of `.yar`/`.yara` files (searched recursively, in sorted
//! order so that the rule order is the same on every machine). All sources
//! share the default namespace, as when several files are given to `yr`.

pub mod analysis;
pub mod edges;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

pub use analysis::{PatternReport, RuleAnalysis, RuleIssue, RuleReport};
pub use edges::EdgeGuard;

use crate::error::RuleError;

/// Compiled rules plus what stream scanning needs to know about them.
pub struct RuleSet {
    rules: yara_x::Rules,
    analysis: RuleAnalysis,
    exact_rules: HashSet<(String, String)>,
    edge_guard: EdgeGuard,
    fingerprint: [u8; 32],
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field("analysis", &self.analysis)
            .finish_non_exhaustive()
    }
}

impl RuleSet {
    /// Compiles rules from source text. `max_pattern_len` caps the window
    /// (see [`crate::ScannerConfig::max_pattern_len`]).
    pub fn from_source(source: &str, max_pattern_len: usize) -> Result<RuleSet, RuleError> {
        Self::from_sources(
            vec![("<string>".to_string(), source.to_string())],
            max_pattern_len,
        )
    }

    /// Compiles every rule file given: each path is a `.yar`/`.yara` file or
    /// a directory searched recursively for them.
    pub fn from_paths<P: AsRef<Path>>(
        paths: &[P],
        max_pattern_len: usize,
    ) -> Result<RuleSet, RuleError> {
        let mut files = Vec::new();
        for path in paths {
            collect_rule_files(path.as_ref(), &mut files)?;
        }
        let sources = files
            .into_iter()
            .map(|path| {
                let text = std::fs::read_to_string(&path).map_err(|source| RuleError::Io {
                    path: path.clone(),
                    source,
                })?;
                Ok((path.display().to_string(), text))
            })
            .collect::<Result<Vec<_>, RuleError>>()?;
        Self::from_sources(sources, max_pattern_len)
    }

    /// Compiles `(origin, text)` sources into one rule set.
    pub fn from_sources(
        sources: Vec<(String, String)>,
        max_pattern_len: usize,
    ) -> Result<RuleSet, RuleError> {
        let mut compiler = yara_x::Compiler::new();
        let mut errors = Vec::new();
        for (origin, text) in &sources {
            let code = yara_x::SourceCode::from(text.as_str()).with_origin(origin.as_str());
            if let Err(err) = compiler.add_source(code) {
                errors.push(err.to_string());
            }
        }
        if !errors.is_empty() {
            return Err(RuleError::Compile(errors.join("\n")));
        }
        let rules = compiler.build();
        let fingerprint = fingerprint(&sources, max_pattern_len);
        let trees: Vec<_> = sources
            .iter()
            .map(|(origin, text)| (origin.clone(), yara_x_parser::ast::AST::from(text.as_str())))
            .collect();
        let analysis = RuleAnalysis::from_asts(&trees, max_pattern_len);
        let exact_rules = analysis
            .rules
            .iter()
            .filter(|r| r.supported)
            .map(|r| (r.namespace.clone(), r.identifier.clone()))
            .collect();
        let edge_guard = EdgeGuard::from_asts(trees.iter().map(|(_, t)| t), max_pattern_len);
        Ok(RuleSet {
            rules,
            analysis,
            exact_rules,
            edge_guard,
            fingerprint,
        })
    }

    /// A digest of the rule texts (in order) and `max_pattern_len`: two
    /// rule sets with the same fingerprint make the same stream contexts,
    /// so a context stored under one can be restored under the other.
    /// File names are not part of it (moving the rules changes nothing).
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// The compiled YARA-X rules.
    pub fn rules(&self) -> &yara_x::Rules {
        &self.rules
    }

    /// Whether stream verdicts of a rule equal a whole-buffer scan.
    pub fn is_exact(&self, namespace: &str, identifier: &str) -> bool {
        self.exact_rules
            .contains(&(namespace.to_string(), identifier.to_string()))
    }

    /// The anchored regexes that replayed spans must not cut.
    pub fn edge_guard(&self) -> &EdgeGuard {
        &self.edge_guard
    }

    /// The stream-scanning analysis of the rules.
    pub fn analysis(&self) -> &RuleAnalysis {
        &self.analysis
    }
}

fn collect_rule_files(path: &Path, files: &mut Vec<PathBuf>) -> Result<(), RuleError> {
    let io_err = |source| RuleError::Io {
        path: path.to_path_buf(),
        source,
    };
    if !std::fs::metadata(path).map_err(io_err)?.is_dir() {
        files.push(path.to_path_buf());
        return Ok(());
    }
    let before = files.len();
    walk_rule_dir(path, files)?;
    if files.len() == before {
        return Err(RuleError::NoRuleFiles(path.to_path_buf()));
    }
    Ok(())
}

fn walk_rule_dir(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), RuleError> {
    let io_err = |source| RuleError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_err)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io_err)?;
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            walk_rule_dir(&entry, files)?;
        } else if matches!(
            entry.extension().and_then(|e| e.to_str()),
            Some("yar" | "yara")
        ) {
            files.push(entry);
        }
    }
    Ok(())
}

/// See [`RuleSet::fingerprint`].
fn fingerprint(sources: &[(String, String)], max_pattern_len: usize) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&(max_pattern_len as u64).to_le_bytes());
    for (_, text) in sources {
        hasher.update(&(text.len() as u64).to_le_bytes());
        hasher.update(text.as_bytes());
    }
    *hasher.finalize().as_bytes()
}
