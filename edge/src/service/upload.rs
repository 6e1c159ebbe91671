//! Request bodies read under a size limit, after the request has been allowed. A model is
//! streamed to a file in the store's staging folder, so a slow or large upload holds a few
//! chunks of memory rather than the whole body; an image, which is decoded in memory
//! anyway, is gathered up to its limit. A refused or broken upload leaves no file behind.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use futures_util::StreamExt;

use super::confined;
use super::http::error;

/// Chunks in flight between the connection and the file writer.
const CHUNKS_IN_FLIGHT: usize = 4;

/// How long draining a refused body may take. A refused body is read and dropped, up to
/// about its endpoint's own limit, so a client still sending reads the refusal rather than
/// a reset connection (a server that closes on unread bytes makes the kernel reset it).
/// Past either bound, the connection is cut.
const DRAIN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a body was not taken.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Over the limit (by its `Content-Length`, or while it arrived).
    #[error("the upload is over the limit of {limit} bytes ({key})")]
    TooLarge {
        /// The limit, bytes.
        limit: usize,
        /// The setting that raises it.
        key: &'static str,
    },
    /// The client went away or sent a broken body.
    #[error("the upload broke off: {0}")]
    Body(String),
    /// The staging file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The staging file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl UploadError {
    /// The answer to send.
    pub fn response(&self) -> Response {
        let status = match self {
            UploadError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            UploadError::Body(_) => StatusCode::BAD_REQUEST,
            UploadError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        error(status, self.to_string())
    }
}

/// The size limit of one kind of upload, and the setting that raises it.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    /// Bytes.
    pub bytes: usize,
    /// The configuration key, for the error.
    pub key: &'static str,
}

impl Limit {
    fn too_large(self) -> UploadError {
        UploadError::TooLarge {
            limit: self.bytes,
            key: self.key,
        }
    }

    /// Refuse by the declared length before keeping anything.
    fn check_declared(self, headers: &HeaderMap) -> Result<(), UploadError> {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match declared {
            Some(n) if n > self.bytes as u64 => Err(self.too_large()),
            _ => Ok(()),
        }
    }
}

/// An upload on disk; the file is removed when this is dropped.
#[derive(Debug)]
pub struct Staged {
    path: PathBuf,
}

impl Staged {
    /// The staged file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Stream `body` into a new file in `dir`, refusing it past `limit`.
pub async fn stage(
    headers: &HeaderMap,
    body: Body,
    dir: &Path,
    limit: Limit,
) -> Result<Staged, UploadError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut stream = body.into_data_stream();
    if let Err(e) = limit.check_declared(headers) {
        drain(&mut stream, limit.bytes).await;
        return Err(e);
    }
    let path = dir.join(format!(
        "upload-{}-{}.partial",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let io_error = |source| UploadError::Io {
        path: path.clone(),
        source,
    };
    confined::real_dir(dir).map_err(io_error)?;
    let file = confined::create_new(&path).map_err(io_error)?;
    let staged = Staged { path: path.clone() };
    let mut received = 0u64;
    let (chunks, mut arriving) = tokio::sync::mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut file = std::io::BufWriter::new(file);
        while let Some(chunk) = arriving.blocking_recv() {
            file.write_all(&chunk)?;
        }
        file.flush()
    });
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| UploadError::Body(e.to_string()))?;
        received += chunk.len() as u64;
        if received > limit.bytes as u64 {
            drop(chunks);
            drain(&mut stream, limit.bytes).await;
            return Err(limit.too_large());
        }
        if chunks.send(chunk).await.is_err() {
            // The writer stopped on an error; it is reported below.
            break;
        }
    }
    drop(chunks);
    match writer.await {
        Ok(Ok(())) => Ok(staged),
        Ok(Err(source)) => Err(io_error(source)),
        Err(e) => Err(io_error(std::io::Error::other(e.to_string()))),
    }
}

/// Gather `body` in memory, refusing it past `limit`.
pub async fn gather(headers: &HeaderMap, body: Body, limit: Limit) -> Result<Bytes, UploadError> {
    let mut stream = body.into_data_stream();
    if let Err(e) = limit.check_declared(headers) {
        drain(&mut stream, limit.bytes).await;
        return Err(e);
    }
    let mut gathered = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| UploadError::Body(e.to_string()))?;
        if gathered.len() + chunk.len() > limit.bytes {
            drain(&mut stream, limit.bytes).await;
            return Err(limit.too_large());
        }
        gathered.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(gathered))
}

/// Read and drop what is left of a refused body: about as much as the endpoint's upload
/// limit, within [`DRAIN_DEADLINE`].
pub async fn discard(body: Body, limit: Limit) {
    drain(&mut body.into_data_stream(), limit.bytes).await;
}

async fn drain(stream: &mut axum::body::BodyDataStream, limit: usize) {
    // A little past the limit, so a body just over it is still read to its end.
    let mut left = limit.saturating_add(1 << 20);
    let _ = tokio::time::timeout(DRAIN_DEADLINE, async {
        while let Some(Ok(chunk)) = stream.next().await {
            if chunk.len() >= left {
                break;
            }
            left -= chunk.len();
        }
    })
    .await;
}
