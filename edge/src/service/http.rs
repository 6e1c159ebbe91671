//! The HTTP API and the device's page. Reads: `GET /` (the page, assets embedded in the
//! binary), `/healthz`, `/metrics` (Prometheus), `/v1/status`, `/v1/latest`, `/v1/model`,
//! `/v1/events` (server-sent events: `label` changes and `notice`s), `/v1/preview.mjpeg`;
//! `POST /v1/classify` takes an image (size-limited). Endpoints that write or hand out
//! what the device holds need the bearer token and are off without one: `POST /v1/model`
//! (ONNX body, optional `X-Scion-Signature` hex header), `GET /v1/model/file`,
//! `POST /v1/references` (a reference image), `POST /v1/capture`, `GET /v1/captures`,
//! `/v1/captures.zip` and `POST /v1/captures/confirm`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use futures_util::Stream;
use serde_json::json;
use tokio::sync::watch;

use super::install_and_swap;
use super::store::{ModelSource, ModelStore, Preparer, StoreError};
use super::upload::{self, Limit};
use super::{captures, page};
use crate::preprocess::decode_rgb;
use crate::serve::hub::{Control, Hub};

/// What the handlers share.
pub struct Api {
    /// The frame loop's shared state.
    pub hub: Arc<Hub>,
    /// The model store, if configured (needed by `POST /v1/model`).
    pub store: Option<Arc<ModelStore>>,
    /// Prepares uploaded models on the service's engine.
    pub prepare: Arc<Preparer>,
    /// Bearer token of the mutating endpoints.
    pub token: Option<String>,
    /// Seconds without frames after which the service is not ready.
    pub stale_after_s: f64,
    /// Largest image upload.
    pub max_upload_bytes: usize,
    /// Largest model upload.
    pub max_model_bytes: usize,
    /// Becomes true when the service stops (ends streams).
    pub shutdown: watch::Receiver<bool>,
    /// What the page says about the device (fixed at start).
    pub device: DeviceInfo,
    /// Image bodies gathered at once ([`IMAGE_UPLOADS_AT_ONCE`]): each holds up to
    /// `max_upload_bytes` of memory, so this bounds what uploads can take.
    pub image_uploads: tokio::sync::Semaphore,
}

/// Image uploads read at the same time; more wait for a turn (holding only a socket).
pub const IMAGE_UPLOADS_AT_ONCE: usize = 8;

/// How long an image upload may take to arrive once its turn came: a client that trickles
/// bytes must not hold a turn for ever.
const IMAGE_UPLOAD_DEADLINE: Duration = Duration::from_secs(30);

/// The device's facts that do not change while it runs.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DeviceInfo {
    /// The frame source's URI.
    pub source: String,
    /// The board profile's name (and L4T release).
    pub board: String,
    /// The precision asked for TensorRT: the config's, else the board's default.
    pub precision: String,
    /// The GPIO actions configured, in words ("off" without any).
    pub gpio: String,
}

/// The router.
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/", get(page::index))
        .route("/index.html", get(page::index))
        .route("/assets/app.js", get(page::script))
        .route("/assets/app.css", get(page::style))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/v1/status", get(status))
        .route("/v1/model/file", get(model_file))
        .route("/v1/captures", get(captures::list))
        .route("/v1/captures.zip", get(captures::zip))
        .route("/v1/captures/confirm", post(captures::confirm))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/latest", get(latest))
        .route("/v1/events", get(events))
        .route("/v1/preview.mjpeg", get(preview))
        .route("/v1/classify", post(classify))
        .route("/v1/model", get(model).post(install))
        .route("/v1/references", post(reference))
        .route("/v1/capture", post(capture))
        .with_state(api)
}

pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Ready, or why not: (status code, word).
fn health(api: &Api, has_model: bool, age: Option<f64>) -> (StatusCode, &'static str) {
    match (has_model, age) {
        // The API listens while the first model's engine is prepared (minutes for a first
        // TensorRT build), so this is what a watcher sees then.
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "preparing engine"),
        (true, None) => (StatusCode::SERVICE_UNAVAILABLE, "waiting for frames"),
        (true, Some(age)) if age > api.stale_after_s => {
            (StatusCode::SERVICE_UNAVAILABLE, "frames stopped")
        }
        _ => (StatusCode::OK, "ready"),
    }
}

async fn healthz(State(api): State<Arc<Api>>) -> Response {
    let model = api.hub.model();
    let age = api.hub.last_frame_age();
    let fps = api.hub.metrics().fps(Instant::now());
    let (status, state) = health(&api, model.is_some(), age);
    (
        status,
        Json(json!({
            "status": state,
            "model": model,
            "last_frame_age_s": age,
            "fps": fps,
        })),
    )
        .into_response()
}

async fn metrics(State(api): State<Arc<Api>>) -> Response {
    let model = api.hub.model();
    let (engine, precision, id) = model.as_ref().map_or(("none", "none", "none"), |m| {
        (m.engine.as_str(), m.precision.as_str(), m.id())
    });
    let labels = crate::serve::metrics::EngineLabels {
        engine,
        precision_asked: &api.device.precision,
        precision,
    };
    let mut text = api
        .hub
        .metrics()
        .render(&labels, id, api.hub.last_frame_age(), Instant::now());
    if let Some(collector) = api.hub.collector() {
        text.push_str(&collector.render_metrics());
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn latest(State(api): State<Arc<Api>>) -> Response {
    match api.hub.latest() {
        Some((output, age)) => {
            let mut value = serde_json::to_value(output).unwrap_or_default();
            value["age_s"] = json!(age);
            Json(value).into_response()
        }
        None => error(StatusCode::NOT_FOUND, "no frame classified yet"),
    }
}

/// Everything the page shows, in one read.
async fn status(State(api): State<Arc<Api>>) -> Response {
    let model = api.hub.model();
    let age = api.hub.last_frame_age();
    let (_, health) = health(&api, model.is_some(), age);
    let now = Instant::now();
    let (fps, counters, latency, uart, gpio_errors) = {
        let m = api.hub.metrics();
        let mean_ms = |h: &crate::serve::metrics::Histogram| h.mean() * 1e3;
        let latency = json!({
            "capture": mean_ms(&m.stages[0]),
            "preprocess": mean_ms(&m.stages[1]),
            "inference": mean_ms(&m.stages[2]),
            "post": mean_ms(&m.stages[3]),
            "total": mean_ms(&m.latency),
        });
        let counters = json!({
            "frames": m.frames,
            "dropped": m.dropped,
            "events": m.events,
            "reconnects": m.reconnects,
            "uploads": m.uploads,
            "model_swaps": m.model_swaps,
            "model_rejections": m.model_rejections,
        });
        (m.fps(now), counters, latency, m.uart.clone(), m.gpio_errors)
    };
    let last_frame_at_ms = age.map(|age| {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3);
        now_ms - age * 1e3
    });
    let collect = match api.hub.collector() {
        Some(c) => {
            let stats = c.stats();
            let config = c.config();
            json!({
                "dir": c.dir(),
                "policies": config.policies.iter().map(|p| p.name()).collect::<Vec<_>>(),
                "saved": stats.saved.values().sum::<u64>(),
                "saved_by_policy": stats.saved,
                "skipped": stats.skipped,
                "evicted": stats.evicted,
                "errors": stats.errors,
                "files": stats.files,
                "bytes": stats.bytes,
                "folders": stats.folders,
                "per_label": config.per_label,
                "max_bytes": config.max_mb.saturating_mul(1 << 20),
            })
        }
        None => json!({ "dir": null, "policies": [], "saved": 0, "skipped": 0, "evicted": 0,
                        "files": 0, "bytes": 0, "max_bytes": 0 }),
    };
    let model_json = model.as_ref().map(|m| {
        json!({
            "name": m.name,
            "sha256": m.sha256,
            "engine": m.engine,
            "labels": m.summary.labels,
            "validation": m.summary.validation,
            "temperature": m.summary.temperature,
            "unknown_rule": m.summary.unknown_rule,
        })
    });
    let engine = model.as_ref().map_or("none", |m| m.engine.as_str());
    // What was asked (config, flag or the board's default) and what the engine was built
    // for: CPU engines run FP32, and a refused reduced-precision engine leaves FP32.
    let precision = model.as_ref().map_or("none", |m| m.precision.as_str());
    let mut body = json!({
        "health": health,
        "uptime_s": api.hub.uptime(),
        "source": api.device.source,
        "board": api.device.board,
        "gpio": if gpio_errors > 0 {
            format!("{} ({gpio_errors} errors)", api.device.gpio)
        } else {
            api.device.gpio.clone()
        },
        "uart": uart,
        "engine": engine,
        "precision": precision,
        "precision_asked": api.device.precision,
        "provider_options": model.as_ref().and_then(|m| m.provider_options.clone()),
        "precision_check": model.as_ref().and_then(|m| m.precision_check.clone()),
        "fps": fps,
        "last_frame_age_s": age,
        "last_frame_at_ms": last_frame_at_ms,
        "stale_after_s": api.stale_after_s,
        "latency_ms": latency,
        "model": model_json,
        "collect": collect,
        "token_required": api.token.is_some(),
        "max_model_bytes": api.max_model_bytes,
        "max_upload_bytes": api.max_upload_bytes,
    });
    if let (Some(map), Some(counters)) = (body.as_object_mut(), counters.as_object()) {
        map.extend(counters.clone());
    }
    Json(body).into_response()
}

/// The serving model's ONNX file (token only: it is the device's to give).
async fn model_file(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    if let Some(response) = refuse(&api, &headers) {
        return response;
    }
    let Some(model) = api.hub.model() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "no model loaded yet");
    };
    let path = model.path.clone();
    match tokio::task::spawn_blocking(move || std::fs::read(path)).await {
        Ok(Ok(bytes)) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{}.onnx\"", model.id()),
                ),
            ],
            bytes,
        )
            .into_response(),
        Ok(Err(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{}: {e}", model.path),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn model(State(api): State<Arc<Api>>) -> Response {
    let slot = api.store.as_ref().and_then(|s| s.current_slot());
    Json(json!({ "model": api.hub.model(), "slot": slot })).into_response()
}

/// Wait until the shutdown flag is set.
async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

async fn events(State(api): State<Arc<Api>>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    use tokio::sync::broadcast::error::RecvError;
    let receivers = (api.hub.subscribe(), api.hub.notices());
    let shutdown = api.shutdown.clone();
    let stream = futures_util::stream::unfold(
        (receivers, shutdown),
        |((mut labels, mut notices), shutdown)| async move {
            loop {
                let (name, data) = tokio::select! {
                    _ = stopped(shutdown.clone()) => return None,
                    next = labels.recv() => match next {
                        Ok(output) => ("label", serde_json::to_string(&output)),
                        // A slow client missed some events; go on with the next.
                        Err(RecvError::Lagged(_)) => continue,
                        Err(RecvError::Closed) => return None,
                    },
                    next = notices.recv() => match next {
                        Ok(notice) => ("notice", serde_json::to_string(&notice)),
                        Err(RecvError::Lagged(_)) => continue,
                        Err(RecvError::Closed) => return None,
                    },
                };
                let event = Event::default().event(name).data(data.unwrap_or_default());
                return Some((Ok(event), ((labels, notices), shutdown)));
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
}

async fn preview(State(api): State<Arc<Api>>) -> Response {
    const BOUNDARY: &str = "scionframe";
    let frames = api.hub.preview();
    let shutdown = api.shutdown.clone();
    let stream =
        futures_util::stream::unfold((frames, shutdown), |(mut frames, shutdown)| async move {
            loop {
                tokio::select! {
                    _ = stopped(shutdown.clone()) => return None,
                    changed = frames.changed() => if changed.is_err() { return None },
                }
                let Some(frame) = frames.borrow_and_update().clone() else {
                    continue;
                };
                let jpeg =
                    tokio::task::spawn_blocking(move || super::preview::render_jpeg(&frame, 80))
                        .await;
                let Ok(Ok(jpeg)) = jpeg else { continue };
                let mut part = format!(
                    "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                    jpeg.len()
                )
                .into_bytes();
                part.extend_from_slice(&jpeg);
                part.extend_from_slice(b"\r\n");
                return Some((Ok::<_, Infallible>(Bytes::from(part)), (frames, shutdown)));
            }
        });
    (
        [
            (
                header::CONTENT_TYPE,
                format!("multipart/x-mixed-replace; boundary={BOUNDARY}"),
            ),
            (header::CACHE_CONTROL, "no-cache".into()),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

impl Api {
    fn image_limit(&self) -> Limit {
        Limit {
            bytes: self.max_upload_bytes,
            key: "http.max_upload_bytes",
        }
    }

    /// An image body, read in its turn and within the deadline.
    async fn image_body(&self, headers: &HeaderMap, body: Body) -> Result<Bytes, Response> {
        let Ok(_turn) = self.image_uploads.acquire().await else {
            return Err(error(StatusCode::SERVICE_UNAVAILABLE, "shutting down"));
        };
        match tokio::time::timeout(
            IMAGE_UPLOAD_DEADLINE,
            upload::gather(headers, body, self.image_limit()),
        )
        .await
        {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(e)) => Err(e.response()),
            Err(_) => Err(error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the image took over {} s to arrive",
                    IMAGE_UPLOAD_DEADLINE.as_secs()
                ),
            )),
        }
    }
}

async fn classify(State(api): State<Arc<Api>>, headers: HeaderMap, body: Body) -> Response {
    let body = match api.image_body(&headers, body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    if body.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "empty body: POST the image's bytes",
        );
    }
    let hub = api.hub.clone();
    let answer = tokio::task::spawn_blocking(move || {
        let image =
            decode_rgb(&body, None).map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
        let (reply, answer) = crossbeam_channel::bounded(1);
        hub.ask(
            Control::Classify(image, reply),
            &answer,
            Duration::from_secs(10),
        )
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e))
    })
    .await;
    match answer {
        Ok(Ok(classified)) => Json(classified).into_response(),
        Ok(Err((status, message))) => error(status, message),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Save the current frame for the next training round (it writes to disk: token only).
async fn capture(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    if let Some(response) = refuse(&api, &headers) {
        return response;
    }
    let hub = api.hub.clone();
    match tokio::task::spawn_blocking(move || hub.capture(Duration::from_secs(10))).await {
        Ok(Ok(captured)) => Json(captured).into_response(),
        Ok(Err(message)) => error(StatusCode::CONFLICT, message),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Check the bearer token; `Some` is the refusal to send.
pub(super) fn refuse(api: &Api, headers: &HeaderMap) -> Option<Response> {
    let Some(token) = &api.token else {
        return Some(error(
            StatusCode::FORBIDDEN,
            "this endpoint is off: no token is configured (http.token or http.token_file)",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    (!same_secret(given.as_bytes(), token.as_bytes()))
        .then(|| error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token"))
}

/// Compare a secret in time that does not depend on where the first differing byte is,
/// so answer times cannot guess a token byte by byte. (Its length is not secret: a wrong
/// length is refused at once.) `black_box` keeps the compiler from ending the loop early.
fn same_secret(given: &[u8], secret: &[u8]) -> bool {
    if given.len() != secret.len() {
        return false;
    }
    let differ = given
        .iter()
        .zip(secret)
        .fold(0u8, |acc, (a, b)| std::hint::black_box(acc | (a ^ b)));
    differ == 0
}

/// The configured model store, or the refusal to send without one.
fn store_of(api: &Api) -> Result<Arc<ModelStore>, Box<Response>> {
    api.store.clone().ok_or_else(|| {
        Box::new(error(
            StatusCode::CONFLICT,
            "no model store is configured (models.dir)",
        ))
    })
}

/// The mutating store endpoints share this, once their request is allowed: the work off
/// the async threads, and one mapping of store errors (422: the input was refused).
async fn store_job<T, F>(store: Arc<ModelStore>, job: F) -> Response
where
    T: serde::Serialize + Send + 'static,
    F: FnOnce(Arc<ModelStore>) -> Result<T, StoreError> + Send + 'static,
{
    match tokio::task::spawn_blocking(move || job(store)).await {
        Ok(Ok(answer)) => Json(answer).into_response(),
        Ok(Err(e)) if e.is_rejection() => error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The token, a serving frame loop and a store: what `POST /v1/model` needs first.
fn install_allowed(api: &Api, headers: &HeaderMap) -> Result<Arc<ModelStore>, Box<Response>> {
    if let Some(response) = refuse(api, headers) {
        return Err(Box::new(response));
    }
    if api.hub.model().is_none() {
        // The frame loop is not running yet to take a swap: the store would point at a
        // model the loop never gets.
        return Err(Box::new(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the first model's engine is still being prepared; retry when /healthz says ready",
        )));
    }
    store_of(api)
}

async fn install(State(api): State<Arc<Api>>, headers: HeaderMap, body: Body) -> Response {
    let signature = headers
        .get("x-scion-signature")
        .map(|v| v.as_bytes().to_vec());
    let limit = Limit {
        bytes: api.max_model_bytes,
        key: "http.max_model_bytes",
    };
    // Nothing of the body is kept before the request is allowed.
    let store = match install_allowed(&api, &headers) {
        Ok(store) => store,
        Err(response) => {
            upload::discard(body, limit).await;
            return *response;
        }
    };
    let staged = match upload::stage(&headers, body, &store.staging_dir(), limit).await {
        Ok(staged) => staged,
        Err(e) => return e.response(),
    };
    let (hub, prepare) = (api.hub.clone(), api.prepare.clone());
    store_job(store, move |store| {
        let source = ModelSource::File(staged.path());
        install_and_swap(&store, &hub, &*prepare, source, signature.as_deref())
    })
    .await
}

async fn reference(State(api): State<Arc<Api>>, headers: HeaderMap, body: Body) -> Response {
    if let Some(response) = refuse(&api, &headers) {
        upload::discard(body, api.image_limit()).await;
        return response;
    }
    let body = match api.image_body(&headers, body).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let store = match store_of(&api) {
        Ok(store) => store,
        Err(response) => return *response,
    };
    store_job(store, move |store| {
        store
            .add_reference(&body)
            .map(|sha| json!({ "sha256": sha }))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secrets_match_only_when_equal() {
        assert!(same_secret(b"s3cret", b"s3cret"));
        assert!(!same_secret(b"s3creT", b"s3cret"));
        assert!(!same_secret(b"X3cret", b"s3cret"));
        assert!(!same_secret(b"s3cre", b"s3cret"));
        assert!(!same_secret(b"", b"s3cret"));
    }
}
