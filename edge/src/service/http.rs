//! The HTTP API. Reads: `GET /healthz`, `/metrics` (Prometheus), `/v1/latest`, `/v1/model`,
//! `/v1/events` (server-sent events), `/v1/preview.mjpeg`; `POST /v1/classify` takes an
//! image (size-limited). Mutating endpoints need the bearer token and are off without one:
//! `POST /v1/model` (ONNX body, optional `X-Scion-Signature` hex header) and
//! `POST /v1/references` (a reference image).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use futures_util::Stream;
use serde_json::json;
use tokio::sync::watch;

use super::install_and_swap;
use super::store::{ModelStore, Preparer, StoreError};
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
}

/// The router.
pub fn router(api: Arc<Api>) -> Router {
    let upload_limit = DefaultBodyLimit::max(api.max_upload_bytes);
    let model_limit = DefaultBodyLimit::max(api.max_model_bytes);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/latest", get(latest))
        .route("/v1/events", get(events))
        .route("/v1/preview.mjpeg", get(preview))
        .route("/v1/classify", post(classify).layer(upload_limit))
        .route("/v1/model", get(model).post(install).layer(model_limit))
        .route("/v1/references", post(reference).layer(upload_limit))
        .route("/v1/capture", post(capture))
        .with_state(api)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn healthz(State(api): State<Arc<Api>>) -> Response {
    let model = api.hub.model();
    let age = api.hub.last_frame_age();
    let fps = api.hub.metrics().fps(Instant::now());
    let (status, state) = match (&model, age) {
        (None, _) => (StatusCode::SERVICE_UNAVAILABLE, "loading"),
        (Some(_), None) => (StatusCode::SERVICE_UNAVAILABLE, "waiting for frames"),
        (Some(_), Some(age)) if age > api.stale_after_s => {
            (StatusCode::SERVICE_UNAVAILABLE, "frames stopped")
        }
        _ => (StatusCode::OK, "ready"),
    };
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
    let (engine, id) = model
        .as_ref()
        .map_or(("none", "none"), |m| (m.engine.as_str(), m.id()));
    let text = api
        .hub
        .metrics()
        .render(engine, id, api.hub.last_frame_age(), Instant::now());
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

async fn model(State(api): State<Arc<Api>>) -> Response {
    let slot = api.store.as_ref().and_then(|s| s.current_slot());
    Json(json!({ "model": api.hub.model(), "slot": slot })).into_response()
}

/// Wait until the shutdown flag is set.
async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

async fn events(State(api): State<Arc<Api>>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let receiver = api.hub.subscribe();
    let shutdown = api.shutdown.clone();
    let stream = futures_util::stream::unfold(
        (receiver, shutdown),
        |(mut receiver, shutdown)| async move {
            loop {
                tokio::select! {
                    _ = stopped(shutdown.clone()) => return None,
                    next = receiver.recv() => match next {
                        Ok(output) => {
                            let data = serde_json::to_string(&output).unwrap_or_default();
                            let event = Event::default().event("label").data(data);
                            return Some((Ok(event), (receiver, shutdown)));
                        }
                        // A slow client missed some events; go on with the next.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                    }
                }
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

async fn classify(State(api): State<Arc<Api>>, body: Bytes) -> Response {
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
fn refuse(api: &Api, headers: &HeaderMap) -> Option<Response> {
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
    // Constant time in the token's length.
    let same = given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    (!same).then(|| error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token"))
}

/// The mutating store endpoints share this: the token, a configured store, the work off
/// the async threads, and one mapping of store errors (422: the input was refused).
async fn store_job<T, F>(api: &Api, headers: &HeaderMap, job: F) -> Response
where
    T: serde::Serialize + Send + 'static,
    F: FnOnce(Arc<ModelStore>) -> Result<T, StoreError> + Send + 'static,
{
    if let Some(response) = refuse(api, headers) {
        return response;
    }
    let Some(store) = api.store.clone() else {
        return error(
            StatusCode::CONFLICT,
            "no model store is configured (models.dir)",
        );
    };
    match tokio::task::spawn_blocking(move || job(store)).await {
        Ok(Ok(answer)) => Json(answer).into_response(),
        Ok(Err(e)) if e.is_rejection() => error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn install(State(api): State<Arc<Api>>, headers: HeaderMap, body: Bytes) -> Response {
    let signature = headers
        .get("x-scion-signature")
        .map(|v| v.as_bytes().to_vec());
    let (hub, prepare) = (api.hub.clone(), api.prepare.clone());
    store_job(&api, &headers, move |store| {
        install_and_swap(&store, &hub, &*prepare, &body, signature.as_deref())
    })
    .await
}

async fn reference(State(api): State<Arc<Api>>, headers: HeaderMap, body: Bytes) -> Response {
    store_job(&api, &headers, move |store| {
        store
            .add_reference(&body)
            .map(|sha| json!({ "sha256": sha }))
    })
    .await
}
