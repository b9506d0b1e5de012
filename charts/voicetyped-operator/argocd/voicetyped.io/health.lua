-- Argo CD health of the voicetyped.io kinds (VoiceDeployment, Dialog, Integration): all three
-- report kstatus conditions, so one script serves them (argocd-cm-patch.yaml registers it
-- for each kind). Healthy once Ready is True for the current generation, Degraded while
-- Stalled, else Progressing. What that means per kind:
--   VoiceDeployment  Ready: every Deployment available; Stalled: a missing Dialog/Secret,
--                    a spec the API server refused.
--   Dialog           Ready: the runtime's validator accepted it and its ConfigMap holds it;
--                    Stalled: an invalid edit (the previous version keeps serving).
--   Integration      Ready: valid and rendered with every referenced Secret present;
--                    Stalled: invalid, or a Secret missing.
local hs = {}

local function condition(kind)
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. generation
  return hs
end

local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = (stalled.reason or "Stalled") .. ": " .. (stalled.message or "")
  return hs
end

local ready = condition("Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "Ready"
  return hs
end

local reconciling = condition("Reconciling")
hs.status = "Progressing"
if reconciling ~= nil and reconciling.status == "True" and reconciling.message ~= "" then
  hs.message = reconciling.message
elseif ready ~= nil and ready.message ~= nil and ready.message ~= "" then
  hs.message = ready.message
else
  hs.message = "Waiting for the Ready condition"
end
return hs
