"""Each service's pod plan: its container settings, environment, volumes and probes (media, speech,
runtime, integration).
"""

from __future__ import annotations

from typing import Any

from lightkube.models.core_v1 import (
    ConfigMapProjection,
    ContainerPort,
    EmptyDirVolumeSource,
    EnvVar,
    EnvVarSource,
    KeyToPath,
    ProjectedVolumeSource,
    SecretKeySelector,
    Sysctl,
    Volume,
    VolumeMount,
    VolumeProjection,
)
from voicetyped_specs.resources.voicedeployment import (
    VoiceDeploymentSpec,
    Workload,
)

from voicetyped_operator import naming
from voicetyped_operator.render.common import (
    DIALOGS_DIR,
    DIGEST_DIR,
    GRACE_MARGIN_S,
    GRPC_PORT,
    HTTP_PORT,
    INTEGRATIONS_DIR,
    PRE_STOP_SECONDS,
    REDIS,
    REDIS_PASSWORD_DIR,
    REDIS_PORT,
    SHUTDOWN_DELAY_S,
    Dependencies,
    Owner,
    PodPlan,
    field_env,
    secret_files,
)
from voicetyped_operator.render.console import add_console, add_webrtc
from voicetyped_operator.render.service import speech_target
from voicetyped_operator.render.sip_edge import add_sip_edge


def _common_config(component: str, workload: Workload, drain_s: float) -> dict[str, Any]:
    return {
        "http_port": HTTP_PORT[component],
        "grpc_port": GRPC_PORT[component],
        "log_level": workload.log_level,
        "log_format": "json",
        "shutdown_grace_s": drain_s,
        "shutdown_delay_s": SHUTDOWN_DELAY_S,
    }


def media_pod(owner: Owner, spec: VoiceDeploymentSpec, deps: Dependencies) -> PodPlan:
    media = spec.media
    vd = owner.name
    config = _common_config("media", media, float(media.drain_seconds))
    config.update(
        {
            "sip_port": media.sip.port,
            "rtp_port_min": media.rtp.port_min,
            "rtp_port_max": media.rtp.port_max,
            "codecs": list(media.codecs),
            "max_calls": media.max_calls,
            "allowed_cidrs": list(media.allowed_source_cidrs),
            "dialog": spec.default_dialog(),
            "dialog_routes": dict(media.dialog_routes),
            "speech_target": speech_target(vd),
            "runtime_target": f"{naming.child_name(vd, 'runtime')}:{GRPC_PORT['runtime']}",
        }
    )
    ip_field = "status.hostIP" if media.host_network else "status.podIP"
    pod = PodPlan(
        component="media",
        workload=media,
        config=config,
        env=[field_env("VOICETYPED_MEDIA_IP", ip_field)],
        grace_seconds=PRE_STOP_SECONDS
        + int(SHUTDOWN_DELAY_S)
        + media.drain_seconds
        + GRACE_MARGIN_S,
        pre_stop=True,
        host_network=media.host_network,
    )
    for transport in media.sip.transports:
        pod.ports.append(
            ContainerPort(
                name=f"sip-{transport}", containerPort=media.sip.port, protocol=transport.upper()
            )
        )
    if media.sip.port < 1024 and not media.host_network:
        # Non-root binds a low port: a namespaced, safe sysctl.
        pod.sysctls.append(Sysctl(name="net.ipv4.ip_unprivileged_port_start", value="0"))
    if media.digest_auth is not None:
        ref = media.digest_auth.secret_ref
        config["digest_users_file"] = f"{DIGEST_DIR}/users"
        config["digest_realm"] = media.digest_auth.realm
        secret_files(
            pod, "digest-users", ref.name, [KeyToPath(key=ref.key, path="users")], DIGEST_DIR
        )
    add_sip_edge(pod, media, deps.tls_hash)
    add_webrtc(pod, spec)
    return pod


def _serve_dialogs(pod: PodPlan, deps: Dependencies) -> PodPlan:
    """Mount the served Dialogs' ConfigMaps (read by hot reload: a change of their content
    is recorded on the Deployment, not the pod template, so it rolls nothing)."""
    pod.volumes.append(
        Volume(
            name="dialogs",
            projected=ProjectedVolumeSource(
                sources=[
                    VolumeProjection(configMap=ConfigMapProjection(name=d.config_map))
                    for d in deps.dialogs
                ],
                defaultMode=0o444,
            ),
        )
    )
    pod.mounts.append(VolumeMount(name="dialogs", mountPath=DIALOGS_DIR, readOnly=True))
    pod.deployment_annotations[naming.DIALOGS_HASH] = deps.dialogs_hash()
    return pod


def speech_pod(spec: VoiceDeploymentSpec, deps: Dependencies) -> PodPlan:
    speech = spec.speech
    asr: dict[str, Any] = {
        "backend": speech.backend,
        "model_name": speech.model_name,
        "language": speech.language,
        "workers": speech.workers,
        "device": "cuda" if speech.gpu.enabled else "cpu",
    }
    if speech.model:
        asr["model"] = speech.model
    if speech.backend == "whispercpp":
        asr["quantization"] = speech.quantization
    config = _common_config("speech", speech, 20.0)
    capacity = {
        "max_streams": speech.capacity.max_calls,
        "load_threshold": speech.capacity.load_threshold,
        "queue_threshold": speech.capacity.queue_threshold,
    }
    config.update({"asr": asr, "tts": {"warmup_dialogs_dir": DIALOGS_DIR}, "capacity": capacity})
    pod = _serve_dialogs(
        PodPlan(
            component="speech",
            workload=speech,
            config=config,
            env=[field_env("VOICETYPED_ADVERTISE_HOST", "status.podIP")],
            startup_failures=90,  # models load (and warm up the prompt cache) before ready
        ),
        deps,
    )
    if speech.gpu.enabled:
        pod.node_selector.update(speech.gpu.node_selector)
        pod.tolerations.extend(speech.gpu.tolerations)
        pod.extra_limits[speech.gpu.resource_name] = str(speech.gpu.count)
    return pod


def _store(
    owner: Owner, spec: VoiceDeploymentSpec, database: int, config: dict[str, Any], pod: PodPlan
) -> None:
    store = spec.runtime.store
    if store.type == "managedRedis":
        host = naming.child_name(owner.name, REDIS)
        config["store_url"] = f"redis://{host}:{REDIS_PORT}/{database}"
        return
    redis = store.redis
    assert redis is not None
    # The URL may carry credentials: an env var from the Secret wins over the file.
    pod.env.append(
        EnvVar(
            name="VOICETYPED_STORE_URL",
            valueFrom=EnvVarSource(
                secretKeyRef=SecretKeySelector(
                    name=redis.url_secret_ref.name, key=redis.url_secret_ref.key
                )
            ),
        )
    )
    if redis.password_secret_ref is not None:
        ref = redis.password_secret_ref
        config["redis_password_file"] = f"{REDIS_PASSWORD_DIR}/password"
        secret_files(
            pod,
            "redis-password",
            ref.name,
            [KeyToPath(key=ref.key, path="password")],
            REDIS_PASSWORD_DIR,
        )


def runtime_pod(owner: Owner, spec: VoiceDeploymentSpec, deps: Dependencies) -> PodPlan:
    runtime = spec.runtime
    vd = owner.name
    config = _common_config("runtime", runtime, float(runtime.drain_seconds))
    config.update(
        {
            "dialogs_dir": DIALOGS_DIR,
            "integration_target": f"{naming.child_name(vd, 'integration')}:"
            f"{GRPC_PORT['integration']}",
        }
    )
    pod = _serve_dialogs(
        PodPlan(
            component="runtime",
            workload=runtime,
            config=config,
            env=[field_env("VOICETYPED_ADVERTISE_HOST", "status.podIP")],
            grace_seconds=PRE_STOP_SECONDS
            + int(SHUTDOWN_DELAY_S)
            + runtime.drain_seconds
            + GRACE_MARGIN_S,
            pre_stop=True,
        ),
        deps,
    )
    _store(owner, spec, 0, config, pod)
    add_console(pod, spec)
    return pod


def integration_pod(owner: Owner, spec: VoiceDeploymentSpec, deps: Dependencies) -> PodPlan:
    gateway = spec.integration
    config = _common_config("integration", gateway, 20.0)
    config["integrations_dir"] = INTEGRATIONS_DIR
    pod = PodPlan(
        component="integration",
        workload=gateway,
        config=config,
        env=[field_env("VOICETYPED_ADVERTISE_HOST", "status.podIP")],
        annotations={naming.INTEGRATIONS_HASH: deps.integrations_hash()},
        deployment_annotations={naming.INTEGRATIONS_HASH: deps.integrations_hash()},
    )
    if deps.integrations:
        pod.volumes.append(
            Volume(
                name="integrations",
                projected=ProjectedVolumeSource(
                    sources=[
                        VolumeProjection(configMap=ConfigMapProjection(name=i.config_map))
                        for i in deps.integrations
                    ],
                    defaultMode=0o444,
                ),
            )
        )
    else:
        pod.volumes.append(Volume(name="integrations", emptyDir=EmptyDirVolumeSource()))
    pod.mounts.append(VolumeMount(name="integrations", mountPath=INTEGRATIONS_DIR, readOnly=True))
    for index, integration in enumerate(deps.integrations):
        for number, mount in enumerate(integration.mounts):
            secret_files(
                pod,
                f"secret-{index}-{number}",
                mount.secret,
                [KeyToPath(key=k, path=k) for k in mount.keys],
                mount.path,
            )
    _store(owner, spec, 1, config, pod)
    return pod
