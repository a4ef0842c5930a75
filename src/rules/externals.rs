//! External variables: values the rules read by name (`filename`,
//! `extension`, ...) that the user defines, as `yr scan --define` and
//! `yara -d` do.
//!
//! A definition is `NAME=VALUE`; the value is a boolean (`true`, `false`),
//! an integer (decimal or `0x` hex), a float, or else a string (surrounding
//! double quotes are removed). Rules that read an external must have it
//! defined, or they do not compile; the compile error then says how to
//! define it.

use std::str::FromStr;

/// One external variable and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct External {
    /// The identifier the rules use.
    pub name: String,
    /// Its value.
    pub value: ExternalValue,
}

/// The value of an external variable.
#[derive(Debug, Clone, PartialEq)]
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

/// Defines `externals` in `compiler`, naming the one it refuses.
pub(crate) fn define(
    compiler: &mut yara_x::Compiler<'_>,
    externals: &[External],
) -> Result<(), String> {
    for external in externals {
        let name = external.name.as_str();
        let defined = match &external.value {
            ExternalValue::Bool(b) => compiler.define_global(name, *b),
            ExternalValue::Integer(i) => compiler.define_global(name, *i),
            ExternalValue::Float(f) => compiler.define_global(name, *f),
            ExternalValue::String(s) => compiler.define_global(name, s.as_str()),
        };
        defined.map_err(|err| format!("cannot define {name}: {err}"))?;
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
}
