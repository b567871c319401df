//! The engine's error type: what went wrong, in words a SQL user can act on.
//! The SQL layer maps each kind to a SQLSTATE; the engine itself knows nothing of Postgres.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A bad argument value (22023 invalid_parameter_value).
    InvalidParameter,
    /// No model of that name (42704 undefined_object).
    UndefinedModel,
    /// A model of that name exists already (42710 duplicate_object).
    Duplicate,
    /// The model exists but cannot do what was asked (42809 wrong_object_type).
    WrongTask,
    /// A file that should be there is not (58P01 undefined_file).
    MissingFile,
    /// A file is there but cannot be parsed (XX001 data_corrupted).
    CorruptFile,
    /// The caller may not do this (42501 insufficient_privilege).
    Privilege,
    /// A bug or an unexpected failure inside the tensor code (XX000 internal_error).
    Internal,
    /// Stopped on request: a cancelled training job (57014 query_canceled).
    Cancelled,
    /// Not in this build or on this machine: a GPU without the cuda feature (0A000 feature_not_supported).
    Unsupported,
    /// The operating system or a device failed: a GPU that cannot be opened (58000 system_error).
    System,
    /// More memory than one call may take (53200 out_of_memory): see engine::budget.
    OutOfMemory,
}

#[derive(Debug, Clone)]
pub struct AiError {
    pub kind: ErrorKind,
    pub message: String,
    pub hint: Option<String>,
}

impl AiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        AiError { kind, message: message.into(), hint: None }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidParameter, message)
    }

    pub fn wrong_task(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::WrongTask, message)
    }

    pub fn missing_file(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::MissingFile, message)
    }

    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::CorruptFile, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
}

impl fmt::Display for AiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AiError {}

/// Tensor failures after a model has loaded are internal errors: the inputs were already checked.
impl From<candle_core::Error> for AiError {
    fn from(e: candle_core::Error) -> Self {
        AiError::internal(format!("tensor computation failed: {e}"))
    }
}

pub type Result<T> = std::result::Result<T, AiError>;

/// Names as a hint lists them: "a, b or c" (`last` "or"), "a, b and c" (`last` "and").
pub fn listed(names: impl IntoIterator<Item = impl AsRef<str>>, last: &str) -> String {
    let names: Vec<String> = names.into_iter().map(|n| n.as_ref().to_string()).collect();
    match names.split_last() {
        Some((end, rest)) if !rest.is_empty() => format!("{} {last} {end}", rest.join(", ")),
        _ => names.concat(),
    }
}
