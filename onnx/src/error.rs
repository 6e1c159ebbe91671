use std::path::PathBuf;

/// What went wrong, coarsely, so that callers can act on it (retry, ask for a flag, give up)
/// without matching on message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A file could not be read or written.
    Io,
    /// The bytes are not a valid ONNX model (truncated, corrupt, or not protobuf at all).
    Malformed,
    /// The file is larger than the configured limit.
    TooLarge,
    /// The graph is well-formed protobuf but inconsistent or unsupported for the request.
    Graph,
    /// The model card is missing something required, or is of an unknown version.
    Card,
    /// Published weights could not be read or do not match the expected architecture.
    Import,
}

/// Errors of the model format. Messages name the file or tensor involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file exceeds the size limit given to the loader.
    #[error("{path}: {size} bytes is more than the limit of {limit} bytes")]
    TooLarge {
        /// The file involved.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit in force.
        limit: u64,
    },
    /// Protobuf decoding failed or the decoded model is structurally invalid.
    #[error("{path}: not a valid ONNX model: {reason}")]
    Malformed {
        /// The file involved (or `<memory>`).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A graph query or patch cannot be satisfied.
    #[error("{0}")]
    Graph(String),
    /// The model card is invalid.
    #[error("model card: {0}")]
    Card(String),
    /// Importing published weights failed.
    #[error("import: {0}")]
    Import(String),
}

impl Error {
    /// The coarse kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { .. } => ErrorKind::Io,
            Error::TooLarge { .. } => ErrorKind::TooLarge,
            Error::Malformed { .. } => ErrorKind::Malformed,
            Error::Graph(_) => ErrorKind::Graph,
            Error::Card(_) => ErrorKind::Card,
            Error::Import(_) => ErrorKind::Import,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
