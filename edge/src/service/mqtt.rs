//! MQTT: label-change events to `TOPIC/event` (QoS 1) and a retained status to
//! `TOPIC/status` every few seconds, with a last will saying the device went offline.
//! The client reconnects by itself; while the broker is away, events queue up to a bound
//! and the overflow is counted, never blocking the frame loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS};
use serde_json::json;
use tokio::sync::{broadcast, watch};

use super::config::{MqttSection, parse_broker};
use crate::serve::Output;
use crate::serve::hub::Hub;

/// Run the MQTT publisher until `shutdown`; then publish a final status and disconnect.
pub async fn run(config: MqttSection, hub: Arc<Hub>, mut shutdown: watch::Receiver<bool>) {
    let Some(broker) = &config.broker else { return };
    let Ok((host, port)) = parse_broker(broker) else {
        return;
    };
    let client_id = config.client_id.clone().unwrap_or_else(default_client_id);
    let status_topic = format!("{}/status", config.topic);
    let event_topic = format!("{}/event", config.topic);
    let mut options = MqttOptions::new(client_id, host, port);
    options.set_keep_alive(Duration::from_secs(15));
    options.set_last_will(LastWill::new(
        &status_topic,
        json!({ "online": false }).to_string(),
        QoS::AtLeastOnce,
        true,
    ));
    let (client, mut connection) = AsyncClient::new(options, 256);
    // The connection is driven by its own task, never cancelled mid-poll (a cancelled
    // connect would make the broker see a takeover and publish our will). It ends when the
    // disconnect has been written.
    let driver = {
        let broker = broker.clone();
        tokio::spawn(async move {
            let mut last_error = None::<Instant>;
            loop {
                match connection.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        tracing::info!("MQTT connected to {broker}");
                        last_error = None;
                    }
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                    Ok(_) => {}
                    Err(rumqttc::ConnectionError::RequestsDone) => break,
                    Err(e) => {
                        // rumqttc reconnects on the next poll; log once a minute.
                        if last_error.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                            tracing::warn!("MQTT broker {broker}: {e}; retrying");
                            last_error = Some(Instant::now());
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        })
    };
    let mut events = hub.subscribe();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(config.status_interval_s));
    let started = Instant::now();
    let mut overflow = 0u64;
    let status = |online: bool, overflow: u64| {
        let metrics = hub.metrics();
        json!({
            "online": online,
            "model": hub.model(),
            "frames": metrics.frames,
            "dropped": metrics.dropped,
            "events": metrics.events,
            "reconnects": metrics.reconnects,
            "fps": metrics.fps(Instant::now()),
            "uptime_s": started.elapsed().as_secs_f64(),
            "mqtt_overflow": overflow,
        })
        .to_string()
    };
    let publish_event = |output: &Output, overflow: &mut u64| {
        let payload = serde_json::to_string(output).unwrap_or_default();
        if client
            .try_publish(&event_topic, QoS::AtLeastOnce, false, payload)
            .is_err()
        {
            *overflow += 1;
        }
    };
    loop {
        tokio::select! {
            _ = stopped(&mut shutdown) => break,
            event = events.recv() => match event {
                Ok(output @ Output::Event { .. }) => publish_event(&output, &mut overflow),
                Ok(Output::Frame { .. }) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => overflow += n,
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = ticker.tick() => {
                if client.try_publish(&status_topic, QoS::AtLeastOnce, true, status(true, overflow)).is_err() {
                    overflow += 1;
                }
            }
        }
    }
    // Events the loop published just before it stopped.
    while let Ok(output) = events.try_recv() {
        if let Output::Event { .. } = output {
            publish_event(&output, &mut overflow);
        }
    }
    // Say goodbye properly (the will is for crashes), flushing what is queued.
    let _ = client.try_publish(
        &status_topic,
        QoS::AtLeastOnce,
        true,
        status(false, overflow),
    );
    let _ = client.try_disconnect();
    if tokio::time::timeout(Duration::from_secs(3), driver)
        .await
        .is_err()
    {
        tracing::warn!("MQTT broker {broker}: could not say goodbye within 3 s");
    }
}

async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

fn default_client_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    format!("scion-edge-{}-{}", host, std::process::id())
}
