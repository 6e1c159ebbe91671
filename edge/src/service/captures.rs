//! The collected images over HTTP (token only: they are pictures of wherever the camera
//! looks): `GET /v1/captures` lists them newest first, `GET /v1/captures.zip` streams
//! them all with their sidecars, `POST /v1/captures/confirm` records a person's label.

use std::convert::Infallible;
use std::io::Write;
use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::http::{Api, error, refuse};
use crate::serve::collect::Collector;

/// The most entries one listing returns.
const LIST_LIMIT: usize = 500;

/// A confirmation is a path and a label: a few hundred bytes.
const CONFIRM_LIMIT: super::upload::Limit = super::upload::Limit {
    bytes: 64 << 10,
    key: "POST /v1/captures/confirm",
};

fn collector(api: &Api, headers: &HeaderMap) -> Result<Arc<Collector>, Box<Response>> {
    if let Some(response) = refuse(api, headers) {
        return Err(Box::new(response));
    }
    api.hub.collector().cloned().ok_or_else(|| {
        Box::new(error(
            StatusCode::CONFLICT,
            "collecting is off: no capture_dir is configured",
        ))
    })
}

/// `GET /v1/captures`.
pub async fn list(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    let collector = match collector(&api, &headers) {
        Ok(c) => c,
        Err(response) => return *response,
    };
    match tokio::task::spawn_blocking(move || {
        let stats = collector.stats();
        json!({ "captures": collector.list(LIST_LIMIT), "files": stats.files, "bytes": stats.bytes })
    })
    .await
    {
        Ok(body) => Json(body).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Hands what the zip writer writes to the response, chunk by chunk.
struct ChannelWriter(tokio::sync::mpsc::Sender<Bytes>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Bytes::copy_from_slice(buf))
            .map_err(|_| std::io::Error::other("the client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `GET /v1/captures.zip`: streamed as it is written, so its size is bounded by the disk
/// budget, not by memory. JPEGs are stored, not compressed again.
pub async fn zip(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    let collector = match collector(&api, &headers) {
        Ok(c) => c,
        Err(response) => return *response,
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    tokio::task::spawn_blocking(move || {
        let dir = collector.dir().to_path_buf();
        let mut zip = zip::ZipWriter::new_stream(std::io::BufWriter::with_capacity(
            1 << 16,
            ChannelWriter(tx),
        ));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for name in collector.files() {
            // A file dropped by the budget since the listing is simply left out, and so is
            // a link put in a capture's place: its target is not the device's to give.
            let Ok(bytes) = super::confined::read_regular(&dir.join(&name)) else {
                continue;
            };
            if zip.start_file(name.as_str(), options).is_err() || zip.write_all(&bytes).is_err() {
                return;
            }
        }
        if let Ok(mut inner) = zip.finish() {
            let _ = inner.flush();
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(chunk), rx))
    });
    (
        [
            (header::CONTENT_TYPE, "application/zip"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"captures.zip\"",
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// The body of `POST /v1/captures/confirm`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confirm {
    /// `folder/name.jpg`, as listed.
    pub path: String,
    /// What the image shows.
    pub label: String,
}

/// `POST /v1/captures/confirm` with `{"path": "...", "label": "..."}`.
pub async fn confirm(State(api): State<Arc<Api>>, headers: HeaderMap, body: Body) -> Response {
    let collector = match collector(&api, &headers) {
        Ok(c) => c,
        Err(response) => {
            super::upload::discard(body, CONFIRM_LIMIT).await;
            return *response;
        }
    };
    // Read here rather than by axum's extractor, whose refusals (a body that breaks off,
    // one past its limit) are plain text: every error of the API is JSON (found by fuzzing).
    let body = match super::upload::gather(&headers, body, CONFIRM_LIMIT).await {
        Ok(body) => body,
        Err(e) => return e.response(),
    };
    let request: Confirm = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"path\": \"folder/name.jpg\", \"label\": \"...\"}}: {e}"),
            );
        }
    };
    match tokio::task::spawn_blocking(move || collector.confirm(&request.path, &request.label))
        .await
    {
        Ok(Ok(label)) => Json(json!({ "confirmed": label })).into_response(),
        Ok(Err(message)) => error(StatusCode::NOT_FOUND, message),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
