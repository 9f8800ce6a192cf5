//! Telling people: Events on the VirtualService and the Deployment, the
//! `--notify-url` message, and the rollout pause that goes with a rollback.
//!
//! Design rule: best effort and bounded; a slow API or receiver never delays
//! the next round.

use super::*;

/// Counts, logs and announces (Events on the VirtualService and the Deployment) a rollback.
pub(super) async fn announce_rollback(
    c: &ClusterLoop,
    event_writer: &events::EventWriter,
    summary: &str,
    why: &RollbackReason,
    reasserted: bool,
    regarding: ObjectReference,
) {
    let reason = why.reason.as_str();
    c.metrics.rollbacks_total.inc();
    // Queued only: a slow receiver must not delay the Events or the next round.
    notify(
        c,
        if reasserted {
            Kind::Reassert
        } else {
            Kind::Rollback
        },
        &why.canary_revision,
        summary,
        reason,
    );
    let (event_reason, verb) = if reasserted {
        (
            events::reasons::CANARY_ROLLBACK_REASSERTED,
            "re-asserted the rollback",
        )
    } else {
        (events::reasons::CANARY_ROLLBACK, "rolled back")
    };
    tracing::warn!(%summary, why = %reason, "{verb}");
    let note = format!("{verb}: {summary}; {reason}");
    publish(
        c,
        event_writer,
        EventType::Warning,
        event_reason,
        events::actions::ROLLBACK,
        &note,
        regarding,
    )
    .await;
    if let Some(d) = deployment_ref(c) {
        publish(
            c,
            event_writer,
            EventType::Warning,
            event_reason,
            events::actions::ROLLBACK,
            &note,
            d,
        )
        .await;
    }
    if c.config.on_rollback == OnRollback::Pause && !c.config.dry_run {
        set_paused(c, true).await;
    }
}

/// Queues a notification for `--notify-url`, if set.
pub(super) fn notify(c: &ClusterLoop, event: Kind, revision: &str, summary: &str, reason: &str) {
    if let Some(n) = &c.notifier {
        n.notify(Notification {
            event,
            group: c.config.group.clone(),
            namespace: c.namespace.clone(),
            virtual_service: c.config.virtual_service.clone(),
            revision: revision.to_owned(),
            summary: summary.to_owned(),
            reason: reason.to_owned(),
            leader: c.config.pod_name.clone(),
            time: k8s_openapi::jiff::Timestamp::now().to_string(),
        });
    }
}

fn deployment_ref(c: &ClusterLoop) -> Option<ObjectReference> {
    c.config.deployment.as_ref().map(|name| ObjectReference {
        api_version: Some("apps/v1".into()),
        kind: Some("Deployment".into()),
        name: Some(name.clone()),
        namespace: Some(c.namespace.clone()),
        ..ObjectReference::default()
    })
}

pub(super) fn vs_ref(c: &ClusterLoop) -> ObjectReference {
    ObjectReference {
        api_version: Some(format!(
            "networking.istio.io/{}",
            c.config.virtual_service_version
        )),
        kind: Some("VirtualService".into()),
        name: Some(c.config.virtual_service.clone()),
        namespace: Some(c.namespace.clone()),
        ..ObjectReference::default()
    }
}

/// Pauses or resumes the canary Deployment's rollout, as `kubectl rollout pause` does.
pub(super) async fn set_paused(c: &ClusterLoop, paused: bool) {
    let Some(name) = c.config.deployment.as_deref() else {
        return;
    };
    let call = async {
        deployment::set_paused(c.client.clone(), &c.namespace, name, paused)
            .await
            .map_err(|e| Readable(&e).to_string())
    };
    match bounded(c.call_timeout(), call).await {
        Ok(_) => tracing::info!(
            deployment = name,
            paused,
            "updated the canary Deployment's rollout"
        ),
        Err(e) => {
            c.metrics.kube_error("patch_deployment");
            tracing::warn!(deployment = name, error = %e, "could not pause/resume the canary Deployment");
        }
    }
}

/// Publishes an Event, best effort and bounded: an API that hangs must not stall the leader.
pub(super) async fn publish(
    c: &ClusterLoop,
    event_writer: &events::EventWriter,
    type_: EventType,
    reason: &str,
    action: &str,
    note: &str,
    regarding: ObjectReference,
) {
    let spec = EventSpec {
        type_,
        reason: reason.into(),
        action: action.into(),
        note: note.into(),
        regarding,
    };
    if tokio::time::timeout(c.call_timeout(), event_writer.publish(spec))
        .await
        .is_err()
    {
        c.metrics.kube_error("event_create");
        tracing::debug!(
            reason,
            "event not published: the API did not answer in time"
        );
    }
}
