"""A service's HorizontalPodAutoscaler: CPU for most, active calls for media, recognition load
(and/or GPU, CPU) for speech.
"""

from __future__ import annotations

from lightkube.models.autoscaling_v2 import (
    CrossVersionObjectReference,
    ExternalMetricSource,
    HorizontalPodAutoscalerBehavior,
    HorizontalPodAutoscalerSpec,
    HPAScalingPolicy,
    HPAScalingRules,
    MetricIdentifier,
    MetricSpec,
    MetricTarget,
    PodsMetricSource,
    ResourceMetricSource,
)
from lightkube.models.meta_v1 import LabelSelector
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from voicetyped_specs.resources.voicedeployment import (
    VoiceDeploymentSpec,
)

from voicetyped_operator import naming
from voicetyped_operator.render.common import Owner, object_meta


def hpa_for(
    owner: Owner, spec: VoiceDeploymentSpec, component: str, labels: dict[str, str]
) -> HorizontalPodAutoscaler | None:
    name = naming.child_name(owner.name, component)
    target = CrossVersionObjectReference(apiVersion="apps/v1", kind="Deployment", name=name)
    behavior: HorizontalPodAutoscalerBehavior | None = None
    metrics: list[MetricSpec] = []
    if component == "media":
        media = spec.media.autoscaling
        if media is None:
            return None
        low, high = media.min_replicas, media.max_replicas
        metrics.append(
            MetricSpec(
                type="Pods",
                pods=PodsMetricSource(
                    metric=MetricIdentifier(name=media.metric_name),
                    target=MetricTarget(
                        type="AverageValue", averageValue=str(media.target_active_calls)
                    ),
                ),
            )
        )
        # One pod at a time, slowly: each stopping pod drains its calls first.
        behavior = HorizontalPodAutoscalerBehavior(
            scaleDown=HPAScalingRules(
                stabilizationWindowSeconds=media.scale_down_stabilization_seconds,
                policies=[HPAScalingPolicy(type="Pods", value=1, periodSeconds=60)],
                selectPolicy="Min",
            )
        )
    elif component == "speech":
        speech = spec.speech.autoscaling
        if speech is None:
            return None
        low, high = speech.min_replicas, speech.max_replicas
        if speech.target_gpu_utilization is not None:
            identifier = MetricIdentifier(name=speech.gpu_metric.name)
            value = MetricTarget(
                type="AverageValue", averageValue=str(speech.target_gpu_utilization)
            )
            if speech.gpu_metric.type == "Pods":
                metrics.append(
                    MetricSpec(type="Pods", pods=PodsMetricSource(metric=identifier, target=value))
                )
            else:
                identifier = MetricIdentifier(
                    name=speech.gpu_metric.name,
                    selector=LabelSelector(
                        matchLabels=naming.selector_labels(owner.name, component)
                    ),
                )
                metrics.append(
                    MetricSpec(
                        type="External",
                        external=ExternalMetricSource(metric=identifier, target=value),
                    )
                )
        if speech.target_load is not None:
            # A quantity in thousandths: 0.6 -> "600m" (how the API server writes it back).
            milli = f"{round(speech.target_load * 1000)}m"
            metrics.append(
                MetricSpec(
                    type="Pods",
                    pods=PodsMetricSource(
                        metric=MetricIdentifier(name=speech.load_metric),
                        target=MetricTarget(type="AverageValue", averageValue=milli),
                    ),
                )
            )
        if speech.target_cpu_utilization is not None:
            metrics.append(_cpu(speech.target_cpu_utilization))
    else:
        auto = spec.runtime.autoscaling if component == "runtime" else spec.integration.autoscaling
        if auto is None:
            return None
        low, high = auto.min_replicas, auto.max_replicas
        metrics.append(_cpu(auto.target_cpu_utilization))
    return HorizontalPodAutoscaler(
        metadata=object_meta(owner, name, labels),
        spec=HorizontalPodAutoscalerSpec(
            scaleTargetRef=target,
            minReplicas=low,
            maxReplicas=high,
            metrics=metrics,
            behavior=behavior,
        ),
    )


def _cpu(utilization: int) -> MetricSpec:
    return MetricSpec(
        type="Resource",
        resource=ResourceMetricSource(
            name="cpu", target=MetricTarget(type="Utilization", averageUtilization=utilization)
        ),
    )
