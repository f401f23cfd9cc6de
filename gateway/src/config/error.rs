//! The error every configuration problem becomes: file, field, problem.

use std::fmt;

/// A configuration that could not be read, parsed or validated.
///
/// Display: `FILE: FIELD: PROBLEM`, for example
/// `tollgate.toml: routes[1].cluster: names unknown cluster "api"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the configuration came from (or `<default>` for the shipped one).
    pub file: String,
    /// The field at fault, as a path (`routes[1].cluster`), or `line L column C` for syntax.
    pub field: String,
    /// What is wrong, lower case.
    pub problem: String,
}

impl ConfigError {
    pub(crate) fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            file: String::new(),
            field: field.into(),
            problem: problem.into(),
        }
    }

    pub(crate) fn in_file(mut self, file: &str) -> Self {
        self.file = file.to_owned();
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.file, self.field, self.problem)
    }
}

impl std::error::Error for ConfigError {}
