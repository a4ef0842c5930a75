//! External variables: values the rules read by name (`filename`,
//! `extension`, ...) that the user defines, as `yr scan --define` and
//! `yara -d` do.
//!
//! A definition is `NAME=VALUE`; the value is a boolean (`true`, `false`),
//! an integer (decimal or `0x` hex), a float, or else a string (surrounding
//! double quotes are removed). Rules that read an external must have it
//! defined, or they do not compile; the compile error then says how to
//! define it. Every rule set declares the file externals
//! ([`FILE_EXTERNALS`]: `filename`, `filepath`, `extension`, `filetype`,
//! the names LOKI and THOR give them), empty unless defined, so that rule
//! files written for file scanners load.
//!
//! A stream may carry values of its own for the externals its rule set
//! declares ([`check_stream_externals`]): a file taken out of a flow knows
//! its name and content type ([`FileInfo`]). Its verdict is then the
//! whole-buffer verdict with those values set.

use std::str::FromStr;

/// The externals every rule set declares, empty unless defined: what a
/// file scanner tells rules about the file (see [`FileInfo`]).
pub const FILE_EXTERNALS: [&str; 4] = ["filename", "filepath", "extension", "filetype"];

/// The longest value a stream's external may have, in bytes (a file name
/// or path, a content type).
pub const MAX_STREAM_EXTERNAL_BYTES: usize = 4096;

/// One external variable and its value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct External {
    /// The identifier the rules use.
    pub name: String,
    /// Its value.
    pub value: ExternalValue,
}

/// The value of an external variable. Floats are equal when their bits
/// are (so that a value equals itself, even a NaN).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum ExternalValue {
    /// `true` or `false`.
    Bool(bool),
    /// An integer.
    Integer(i64),
    /// A float.
    Float(f64),
    /// Anything else.
    String(String),
}

impl PartialEq for ExternalValue {
    fn eq(&self, other: &ExternalValue) -> bool {
        match (self, other) {
            (ExternalValue::Bool(a), ExternalValue::Bool(b)) => a == b,
            (ExternalValue::Integer(a), ExternalValue::Integer(b)) => a == b,
            (ExternalValue::Float(a), ExternalValue::Float(b)) => a.to_bits() == b.to_bits(),
            (ExternalValue::String(a), ExternalValue::String(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for ExternalValue {}

impl FromStr for External {
    type Err = String;

    /// Parses `NAME=VALUE`.
    fn from_str(text: &str) -> Result<External, String> {
        let (name, value) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not NAME=VALUE"))?;
        let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "{name:?} is not a rule identifier (letters, digits, _)"
            ));
        }
        Ok(External {
            name: name.to_string(),
            value: ExternalValue::parse(value),
        })
    }
}

impl ExternalValue {
    fn parse(text: &str) -> ExternalValue {
        let integer = match text.strip_prefix("0x") {
            Some(hex) => i64::from_str_radix(hex, 16).ok(),
            None => text.parse().ok(),
        };
        match (text, integer) {
            ("true", _) => ExternalValue::Bool(true),
            ("false", _) => ExternalValue::Bool(false),
            (_, Some(integer)) => ExternalValue::Integer(integer),
            _ => match text.parse::<f64>() {
                Ok(float) if text.contains('.') => ExternalValue::Float(float),
                _ => {
                    let unquoted = text
                        .strip_prefix('"')
                        .and_then(|t| t.strip_suffix('"'))
                        .unwrap_or(text);
                    ExternalValue::String(unquoted.to_string())
                }
            },
        }
    }

    /// What kind of value it is, as the rules see it.
    pub fn type_name(&self) -> &'static str {
        match self {
            ExternalValue::Bool(_) => "a boolean",
            ExternalValue::Integer(_) => "an integer",
            ExternalValue::Float(_) => "a float",
            ExternalValue::String(_) => "a string",
        }
    }

    /// The value as text, for the rule set's fingerprint.
    #[cfg(feature = "store")]
    pub(crate) fn describe(&self) -> String {
        match self {
            ExternalValue::Bool(b) => format!("bool:{b}"),
            ExternalValue::Integer(i) => format!("int:{i}"),
            ExternalValue::Float(f) => format!("float:{f}"),
            ExternalValue::String(s) => format!("str:{s}"),
        }
    }
}

/// The externals a rule set declares: `defined`, then each of
/// [`FILE_EXTERNALS`] it does not define, as an empty string.
pub(crate) fn declared(defined: &[External]) -> Vec<External> {
    let mut all = defined.to_vec();
    for name in FILE_EXTERNALS {
        if !defined.iter().any(|external| external.name == name) {
            all.push(External {
                name: name.to_string(),
                value: ExternalValue::String(String::new()),
            });
        }
    }
    all
}

/// Checks a stream's own values against the externals its rule set
/// declares: each names one of them, has its type and at most
/// [`MAX_STREAM_EXTERNAL_BYTES`], and none is given twice. The error says
/// which is wrong and why.
pub fn check_stream_externals(declared: &[External], given: &[External]) -> Result<(), String> {
    for (index, external) in given.iter().enumerate() {
        let name = external.name.as_str();
        let Some(declaration) = declared.iter().find(|d| d.name == name) else {
            let names: Vec<&str> = declared.iter().map(|d| d.name.as_str()).collect();
            return Err(format!(
                "the rules declare no external `{name}` (they declare {}; others are declared with --define {name}=VALUE)",
                names.join(", ")
            ));
        };
        if std::mem::discriminant(&declaration.value) != std::mem::discriminant(&external.value) {
            return Err(format!(
                "`{name}` is {} in the rules, not {}",
                declaration.value.type_name(),
                external.value.type_name()
            ));
        }
        if let ExternalValue::String(text) = &external.value {
            if text.len() > MAX_STREAM_EXTERNAL_BYTES {
                return Err(format!(
                    "the value of `{name}` has {} bytes, more than the limit of {MAX_STREAM_EXTERNAL_BYTES}",
                    text.len()
                ));
            }
        }
        if given[..index].iter().any(|earlier| earlier.name == name) {
            return Err(format!("`{name}` is given twice"));
        }
    }
    Ok(())
}

/// What a stream that is a file knows about itself, as producers that
/// extract files from flows learn it (an HTTP body, a mail attachment).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileInfo {
    /// Its name (`Content-Disposition`, the last segment of a URL path).
    pub name: Option<String>,
    /// Its full path (a URL path, or the name).
    pub path: Option<String>,
    /// Its content type (`application/pdf`).
    pub content_type: Option<String>,
}

impl FileInfo {
    /// Its values of the [`FILE_EXTERNALS`], for those it knows:
    /// `filename`, `filepath` (the name when no path is known),
    /// `extension` (from the name, lowercase with its dot, `.exe`, as LOKI
    /// and THOR set it), `filetype` (the content type, without parameters).
    /// Values longer than [`MAX_STREAM_EXTERNAL_BYTES`] are cut there (at a
    /// character boundary): a name is what a flow's peer chose.
    pub fn externals(&self) -> Vec<External> {
        let string = |name: &str, value: &str| External {
            name: name.to_string(),
            value: ExternalValue::String(cut_to_limit(value).to_string()),
        };
        let mut externals = Vec::new();
        if let Some(name) = &self.name {
            externals.push(string("filename", name));
            if let Some(extension) = extension_of(name) {
                externals.push(string("extension", &extension));
            }
        }
        if let Some(path) = self.path.as_ref().or(self.name.as_ref()) {
            externals.push(string("filepath", path));
        }
        if let Some(content_type) = &self.content_type {
            let bare = content_type.split(';').next().unwrap_or_default().trim();
            externals.push(string("filetype", &bare.to_ascii_lowercase()));
        }
        externals
    }
}

/// A stream's own values when it opens: `file`'s externals (none without
/// one), then `given`, each replacing the file's of the same name.
pub fn stream_externals(file: Option<&FileInfo>, given: Vec<External>) -> Vec<External> {
    let mut externals = file.map(FileInfo::externals).unwrap_or_default();
    for value in given {
        externals.retain(|e| e.name != value.name);
        externals.push(value);
    }
    externals
}

/// `.exe` for `setup.EXE`; none for `README` or `.profile`.
fn extension_of(name: &str) -> Option<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    match base.rfind('.') {
        Some(dot) if dot > 0 && dot + 1 < base.len() => Some(base[dot..].to_lowercase()),
        _ => None,
    }
}

fn cut_to_limit(text: &str) -> &str {
    let mut end = text.len().min(MAX_STREAM_EXTERNAL_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `target.method(name, value)` for an external, its value in the type
/// YARA-X takes: `define_global` on a compiler, `set_global` on a scanner.
/// Evaluates to `Result<(), yara_x::VariableError>`.
macro_rules! pass_external {
    ($target:ident.$method:ident($external:expr)) => {{
        use $crate::rules::ExternalValue;
        let external: &$crate::rules::External = $external;
        let name = external.name.as_str();
        match &external.value {
            ExternalValue::Bool(b) => $target.$method(name, *b).map(|_| ()),
            ExternalValue::Integer(i) => $target.$method(name, *i).map(|_| ()),
            ExternalValue::Float(f) => $target.$method(name, *f).map(|_| ()),
            ExternalValue::String(s) => $target.$method(name, s.as_str()).map(|_| ()),
        }
    }};
}
pub(crate) use pass_external;

/// Defines `externals` in `compiler`, naming the one it refuses.
pub(crate) fn define(
    compiler: &mut yara_x::Compiler<'_>,
    externals: &[External],
) -> Result<(), String> {
    for external in externals {
        let defined = pass_external!(compiler.define_global(external));
        defined.map_err(|err| format!("cannot define {}: {err}", external.name))?;
    }
    Ok(())
}

/// A hint for a compile error that names an identifier the rules do not
/// define: often an external they expect.
pub(crate) fn hint(errors: &str) -> Option<&'static str> {
    errors.contains("unknown identifier").then_some(
        "if it is an external variable (filename, filepath, extension, ...), define it: --define NAME=VALUE",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_typed_as_yr_types_them() {
        let value = |t: &str| t.parse::<External>().unwrap().value;
        assert_eq!(value("a=true"), ExternalValue::Bool(true));
        assert_eq!(value("a=42"), ExternalValue::Integer(42));
        assert_eq!(value("a=0x10"), ExternalValue::Integer(16));
        assert_eq!(value("a=-1.5"), ExternalValue::Float(-1.5));
        assert_eq!(value("a=\"x.exe\""), ExternalValue::String("x.exe".into()));
        assert_eq!(value("a=x=y"), ExternalValue::String("x=y".into()));
        assert!("novalue".parse::<External>().is_err());
        assert!("9a=1".parse::<External>().is_err());
    }

    fn string(name: &str, value: &str) -> External {
        External {
            name: name.into(),
            value: ExternalValue::String(value.into()),
        }
    }

    #[test]
    fn given_values_replace_the_files_of_the_same_name() {
        let info = FileInfo {
            name: Some("a.EXE".into()),
            ..FileInfo::default()
        };
        let given = External {
            name: "extension".into(),
            value: ExternalValue::String(".bin".into()),
        };
        let all = stream_externals(Some(&info), vec![given.clone()]);
        let names: Vec<&str> = all.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["filename", "filepath", "extension"]);
        assert_eq!(all[2], given);
        assert_eq!(stream_externals(None, vec![given.clone()]), [given]);
    }

    #[test]
    fn file_externals_are_declared_unless_defined() {
        let declared = declared(&["filename=a.exe".parse().unwrap()]);
        let names: Vec<&str> = declared.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["filename", "filepath", "extension", "filetype"]);
        assert_eq!(declared[0], string("filename", "a.exe"));
        assert_eq!(declared[1], string("filepath", ""));
    }

    #[test]
    fn a_stream_may_set_only_declared_externals_of_their_type_and_size() {
        let declared = declared(&["size_hint=10".parse().unwrap()]);
        let check = |given: &[External]| check_stream_externals(&declared, given);
        assert!(check(&[string("filename", "x.exe")]).is_ok());
        assert!(check(&["size_hint=3".parse().unwrap()]).is_ok());
        let unknown = check(&[string("owner", "root")]).unwrap_err();
        assert!(unknown.contains("no external `owner`"), "{unknown}");
        let mistyped = check(&[string("size_hint", "big")]).unwrap_err();
        assert!(
            mistyped.contains("an integer in the rules, not a string"),
            "{mistyped}"
        );
        let long = check(&[string(
            "filename",
            &"a".repeat(MAX_STREAM_EXTERNAL_BYTES + 1),
        )]);
        assert!(long.unwrap_err().contains("limit of 4096"));
        let twice = check(&[string("filename", "a"), string("filename", "b")]);
        assert!(twice.unwrap_err().contains("twice"));
    }

    #[test]
    fn a_file_gives_its_name_path_extension_and_type() {
        let info = FileInfo {
            name: Some("Setup.EXE".into()),
            path: Some("/download/Setup.EXE".into()),
            content_type: Some("Application/Octet-Stream; charset=binary".into()),
        };
        assert_eq!(
            info.externals(),
            [
                string("filename", "Setup.EXE"),
                string("extension", ".exe"),
                string("filepath", "/download/Setup.EXE"),
                string("filetype", "application/octet-stream"),
            ]
        );
        let bare = FileInfo {
            name: Some("README".into()),
            ..FileInfo::default()
        };
        assert_eq!(
            bare.externals(),
            [string("filename", "README"), string("filepath", "README")]
        );
        let long = FileInfo {
            name: Some("é".repeat(MAX_STREAM_EXTERNAL_BYTES)),
            ..FileInfo::default()
        };
        let ExternalValue::String(cut) = &long.externals()[0].value else {
            panic!("a name is a string")
        };
        assert!(
            cut.len() <= MAX_STREAM_EXTERNAL_BYTES && cut.len() > MAX_STREAM_EXTERNAL_BYTES - 2
        );
        assert!(FileInfo::default().externals().is_empty());
    }
}
