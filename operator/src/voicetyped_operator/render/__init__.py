"""VoiceDeployment -> the Kubernetes objects that run it (pure: no API calls).

Per service (media, speech, runtime, integration): a ServiceAccount, a settings ConfigMap
(``config.yaml``, read through ``VOICETYPED_CONFIG_FILE``), a Deployment, a Service, a
PodDisruptionBudget, a NetworkPolicy and, with autoscaling, an HPA; for speech also the
headless ``<name>-speech-pods`` Service the media gateway spreads calls over; plus a Redis
Deployment/Service for the operator-managed state store.

Rollout rules:

* a settings change rolls the service (``voicetyped.io/config-hash`` on the pod template);
* a Dialog change does **not** roll anything: the runtime and speech pods mount the Dialog
  ConfigMaps through a projected volume and hot-reload them (calls keep running); the hash
  is recorded on the Deployment's own annotations;
* an Integration change rolls the integration gateway (``voicetyped.io/integrations-hash``
  on its pod template), which holds no calls;
* media and runtime stop gracefully: a preStop pause lets endpoints drop the pod, SIGTERM
  then drains (media: new calls 503, active calls finish) within the drain time, and
  ``terminationGracePeriodSeconds`` covers both.

One module per kind of object: ``services`` (each service's pod plan), ``deployment``,
``service``, ``hpa``, ``redis``, ``network_policy``; ``sip_edge`` and ``console`` (the live
call console and browser calling, when enabled: their environment, token file, the
``<name>-webrtc`` Service and NetworkPolicy rules) add to the pod plans; ``common`` holds what
they share and ``voicedeployment`` puts them together.
"""

from voicetyped_operator.render.common import (
    CHILD_KINDS,
    DIALOGS_DIR,
    INTEGRATIONS_DIR,
    REDIS,
    Child,
    ChildKind,
    Dependencies,
    Owner,
    RenderError,
    ServedDialog,
    ServedIntegration,
    image,
)
from voicetyped_operator.render.voicedeployment import possible_children, render

__all__ = [
    "CHILD_KINDS",
    "DIALOGS_DIR",
    "INTEGRATIONS_DIR",
    "REDIS",
    "Child",
    "ChildKind",
    "Dependencies",
    "Owner",
    "RenderError",
    "ServedDialog",
    "ServedIntegration",
    "image",
    "possible_children",
    "render",
]
