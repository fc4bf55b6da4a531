{{/*
Chart name, truncated to the 63 characters a label value allows.
*/}}
{{- define "extension-server.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name. A release named like the chart (`helm install extension-server
...`) gives plain "extension-server".
*/}}
{{- define "extension-server.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "extension-server.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels. Every value a user can set is quoted where it is rendered (here and in every
template), so that it stays one scalar whatever it holds; values.schema.json also says
what each one may be.
*/}}
{{- define "extension-server.labels" -}}
helm.sh/chart: {{ include "extension-server.chart" . | quote }}
{{ include "extension-server.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
app.kubernetes.io/part-of: extension-server
{{- end }}

{{/*
Selector labels (immutable once the Deployment exists: keep them minimal).
*/}}
{{- define "extension-server.selectorLabels" -}}
app.kubernetes.io/name: {{ include "extension-server.name" . | quote }}
app.kubernetes.io/instance: {{ .Release.Name | quote }}
{{- end }}

{{/*
Name of the ServiceAccount to use.
*/}}
{{- define "extension-server.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "extension-server.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Service name: Envoy Gateway reaches the server at <service>.<namespace>.svc.<clusterDomain>.
*/}}
{{- define "extension-server.serviceName" -}}
{{- .Values.service.name | default "extension-server" }}
{{- end }}

{{/*
The name Envoy Gateway calls (extensionManager.service.fqdn.hostname), which the server
certificate must carry.
*/}}
{{- define "extension-server.serviceFQDN" -}}
{{- printf "%s.%s.svc.%s" (include "extension-server.serviceName" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{/*
True (non-empty) when the gRPC port serves TLS: tls.enabled, or cert-manager issuing the
certificates (tls.certManager.enabled).
*/}}
{{- define "extension-server.tlsOn" -}}
{{- if or .Values.tls.enabled .Values.tls.certManager.enabled }}true{{ end }}
{{- end }}

{{/*
The server's kubernetes.io/tls Secret: tls.secretName, or with cert-manager the Secret it
writes (tls.secretName, else <fullname>-tls).
*/}}
{{- define "extension-server.tlsSecretName" -}}
{{- if .Values.tls.certManager.enabled }}
{{- .Values.tls.secretName | default (printf "%s-tls" (include "extension-server.fullname" .)) }}
{{- else }}
{{- .Values.tls.secretName }}
{{- end }}
{{- end }}

{{/*
The Secret and key holding the CA that client certificates must chain to (mTLS), or empty
for TLS without client certificates. With cert-manager: the ca.crt it writes into the
server's Secret, the CA of the issuer that also signs Envoy Gateway's certificate.
*/}}
{{- define "extension-server.clientCASecretName" -}}
{{- if .Values.tls.certManager.enabled }}
{{- include "extension-server.tlsSecretName" . }}
{{- else if .Values.tls.enabled }}
{{- .Values.tls.clientCA.secretName }}
{{- end }}
{{- end }}
{{- define "extension-server.clientCAKey" -}}
{{- if .Values.tls.certManager.enabled }}ca.crt{{ else }}{{ .Values.tls.clientCA.key }}{{ end }}
{{- end }}

{{/*
The port the server listens on (EXTENSION_SERVER_PORT, containerPort, probes).
*/}}
{{- define "extension-server.containerPort" -}}
5005
{{- end }}

{{/*
The port the kubelet's grpc probes ask: the gRPC port, or with TLS (which that probe cannot
speak) the plaintext health port, `--health-port`, which serves the health service only.
*/}}
{{- define "extension-server.probePort" -}}
{{- if include "extension-server.tlsOn" . }}
{{- .Values.healthPort }}
{{- else }}
{{- include "extension-server.containerPort" . }}
{{- end }}
{{- end }}

{{/*
Where the chart mounts files the server reads. Each is a directory mount (never subPath),
so the kubelet's atomic updates of a Secret or a projected token reach the running pod.
*/}}
{{- define "extension-server.tlsDir" -}}
/etc/extension-server/tls
{{- end }}
{{- define "extension-server.tlsClientCADir" -}}
/etc/extension-server/tls-client-ca
{{- end }}
{{- define "extension-server.vaultCADir" -}}
/etc/extension-server/vault-ca
{{- end }}
{{- define "extension-server.vaultTokenDir" -}}
/etc/extension-server/vault-token
{{- end }}
{{- define "extension-server.vaultApproleDir" -}}
/etc/extension-server/vault-approle
{{- end }}
{{- define "extension-server.vaultJwtDir" -}}
/var/run/secrets/extension-server/vault
{{- end }}

{{/*
True (non-empty) when the server gets a Vault store.
*/}}
{{- define "extension-server.vaultOn" -}}
{{- if .Values.vault.addr }}true{{ end }}
{{- end }}

{{/*
True (non-empty) when the rotation watcher can run (docs/rotation.md): rotation.pollInterval
is not zero and a store is configured: vault.addr, aws.region, aws.roleArn, or the IRSA
annotation on the ServiceAccount. The server starts its watcher only with a store, so only
then does the chart pass the interval, render the watcher's RBAC (rotation-rbac.yaml) and
mount the API-server token; otherwise the interval it passes is 0.
*/}}
{{- define "extension-server.rotationEnabled" -}}
{{- $seconds := regexReplaceAll "(ms|s|m|h)$" (toString .Values.rotation.pollInterval) "" | float64 }}
{{- if and (gt $seconds 0.0) (include "extension-server.storeConfigured" .) }}true{{ end }}
{{- end }}

{{/*
True (non-empty) when the values configure a secret store. (With EKS Pod Identity and no
aws.region the chart cannot tell: the region then comes from the pod's environment.)
*/}}
{{- define "extension-server.storeConfigured" -}}
{{- $irsa := index (.Values.serviceAccount.annotations | default dict) "eks.amazonaws.com/role-arn" }}
{{- if or .Values.vault.addr .Values.aws.region .Values.aws.roleArn $irsa }}true{{ end }}
{{- end }}

{{/*
True (non-empty) when the server writes Kubernetes Events on the policies (events.enabled):
the chart then passes auto (on in the pod), renders their RBAC (events-rbac.yaml) and mounts
the API-server token.
*/}}
{{- define "extension-server.eventsEnabled" -}}
{{- if .Values.events.enabled }}true{{ end }}
{{- end }}

{{/*
True (non-empty) when the server talks to the Kubernetes API: the rotation watcher, or Events.
*/}}
{{- define "extension-server.kubeApiNeeded" -}}
{{- if or (include "extension-server.rotationEnabled" .) (include "extension-server.eventsEnabled" .) }}true{{ end }}
{{- end }}

{{/*
Where the API-server token is mounted when the watcher runs or Events are on: the path
lightkube (and every Kubernetes client) reads in a pod, the one automountServiceAccountToken
would use.
*/}}
{{- define "extension-server.kubeApiDir" -}}
/var/run/secrets/kubernetes.io/serviceaccount
{{- end }}

{{/*
The server's settings, as EXTENSION_SERVER_<NAME> variables (server/settings.py).
*/}}
{{- define "extension-server.env" -}}
- name: EXTENSION_SERVER_PORT
  value: {{ include "extension-server.containerPort" . | quote }}
- name: EXTENSION_SERVER_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: EXTENSION_SERVER_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: EXTENSION_SERVER_LOG_REPEAT_INTERVAL
  value: {{ .Values.logRepeatInterval | quote }}
- name: EXTENSION_SERVER_UNPROTECTED_LISTENERS
  value: {{ .Values.unprotectedListeners | quote }}
- name: EXTENSION_SERVER_WORKERS
  value: {{ .Values.workers | quote }}
- name: EXTENSION_SERVER_MAX_MESSAGE_SIZE
  value: {{ .Values.maxMessageSize | quote }}
- name: EXTENSION_SERVER_MAX_USERS_PER_POLICY
  value: {{ .Values.maxUsersPerPolicy | quote }}
- name: EXTENSION_SERVER_MAX_CONCURRENT_CALLS
  value: {{ .Values.maxConcurrentCalls | quote }}
- name: EXTENSION_SERVER_CALL_TIMEOUT
  value: {{ .Values.callTimeout | quote }}
- name: EXTENSION_SERVER_SHUTDOWN_GRACE
  value: {{ .Values.shutdownGrace | quote }}
- name: EXTENSION_SERVER_METRICS_PORT
  value: {{ ternary .Values.metrics.port 0 .Values.metrics.enabled | quote }}
- name: EXTENSION_SERVER_FORBID_PLAINTEXT
  value: {{ .Values.forbidPlaintext | quote }}
- name: EXTENSION_SERVER_SECRET_CACHE_TTL
  value: {{ .Values.secretCache.ttl | quote }}
- name: EXTENSION_SERVER_SECRET_MAX_STALE
  value: {{ .Values.secretCache.maxStale | quote }}
- name: EXTENSION_SERVER_BACKEND_TIMEOUT
  value: {{ .Values.backendTimeout | quote }}
# rotation.pollInterval while a store is configured, else 0 (no watcher: no RBAC, no token).
- name: EXTENSION_SERVER_ROTATION_POLL_INTERVAL
  value: {{ ternary (toString .Values.rotation.pollInterval) "0" (eq (include "extension-server.rotationEnabled" .) "true") | quote }}
- name: EXTENSION_SERVER_ROTATION_MAX_POLICIES
  value: {{ .Values.rotation.maxPolicies | quote }}
- name: EXTENSION_SERVER_ROTATION_LEASE_NAMESPACE
  value: {{ .Release.Namespace | quote }}
- name: EXTENSION_SERVER_ROTATION_LEASE_NAME
  value: {{ .Values.rotation.leaseName | quote }}
- name: EXTENSION_SERVER_KUBERNETES_EVENTS
  value: {{ ternary "auto" "off" (eq (include "extension-server.eventsEnabled" .) "true") | quote }}
- name: EXTENSION_SERVER_KUBERNETES_EVENTS_INTERVAL
  value: {{ .Values.events.interval | quote }}
- name: EXTENSION_SERVER_AUDIT_LOG
  value: {{ .Values.audit.destination | quote }}
{{- if include "extension-server.tlsOn" . }}
- name: EXTENSION_SERVER_TLS_CERT_FILE
  value: {{ printf "%s/tls.crt" (include "extension-server.tlsDir" .) | quote }}
- name: EXTENSION_SERVER_TLS_KEY_FILE
  value: {{ printf "%s/tls.key" (include "extension-server.tlsDir" .) | quote }}
{{- if include "extension-server.clientCASecretName" . }}
- name: EXTENSION_SERVER_TLS_CLIENT_CA_FILE
  value: {{ printf "%s/ca.crt" (include "extension-server.tlsClientCADir" .) | quote }}
{{- end }}
{{- end }}
- name: EXTENSION_SERVER_VAULT_PATH_TEMPLATE
  value: {{ .Values.vault.pathTemplate | quote }}
{{- with .Values.vault }}
{{- if .addr }}
- name: EXTENSION_SERVER_VAULT_ADDR
  value: {{ .addr | quote }}
{{- if .namespace }}
- name: EXTENSION_SERVER_VAULT_NAMESPACE
  value: {{ .namespace | quote }}
{{- end }}
{{- if or .caCert.secretName .caCert.configMapName }}
- name: EXTENSION_SERVER_VAULT_CA_CERT
  value: {{ printf "%s/ca.crt" (include "extension-server.vaultCADir" $) | quote }}
{{- end }}
- name: EXTENSION_SERVER_VAULT_AUTH
  value: {{ .auth | quote }}
{{- if .authMount }}
- name: EXTENSION_SERVER_VAULT_AUTH_MOUNT
  value: {{ .authMount | quote }}
{{- end }}
{{- if eq .auth "token" }}
- name: EXTENSION_SERVER_VAULT_TOKEN_FILE
  value: {{ printf "%s/token" (include "extension-server.vaultTokenDir" $) | quote }}
{{- else if eq .auth "kubernetes" }}
- name: EXTENSION_SERVER_VAULT_ROLE
  value: {{ .role | quote }}
- name: EXTENSION_SERVER_VAULT_KUBERNETES_JWT_FILE
  value: {{ printf "%s/token" (include "extension-server.vaultJwtDir" $) | quote }}
{{- else if eq .auth "approle" }}
- name: EXTENSION_SERVER_VAULT_APPROLE_ROLE_ID
  value: {{ .approle.roleId | quote }}
- name: EXTENSION_SERVER_VAULT_APPROLE_SECRET_ID_FILE
  value: {{ printf "%s/secret-id" (include "extension-server.vaultApproleDir" $) | quote }}
{{- end }}
{{- end }}
{{- end }}
- name: EXTENSION_SERVER_AWS_SECRET_TEMPLATE
  value: {{ .Values.aws.secretTemplate | quote }}
{{- with .Values.aws.region }}
- name: EXTENSION_SERVER_AWS_REGION
  value: {{ . | quote }}
{{- end }}
{{- with .Values.aws.endpointUrl }}
- name: EXTENSION_SERVER_AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.aws.roleArn }}
- name: EXTENSION_SERVER_AWS_ROLE_ARN
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{/*
Volume mounts and volumes for the files above (all read-only).
*/}}
{{- define "extension-server.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if include "extension-server.kubeApiNeeded" . }}
- name: kube-api-access
  mountPath: {{ include "extension-server.kubeApiDir" . }}
  readOnly: true
{{- end }}
{{- if include "extension-server.tlsOn" . }}
- name: tls
  mountPath: {{ include "extension-server.tlsDir" . }}
  readOnly: true
{{- if include "extension-server.clientCASecretName" . }}
- name: tls-client-ca
  mountPath: {{ include "extension-server.tlsClientCADir" . }}
  readOnly: true
{{- end }}
{{- end }}
{{- with .Values.vault }}
{{- if .addr }}
{{- if or .caCert.secretName .caCert.configMapName }}
- name: vault-ca
  mountPath: {{ include "extension-server.vaultCADir" $ }}
  readOnly: true
{{- end }}
{{- if eq .auth "token" }}
- name: vault-token
  mountPath: {{ include "extension-server.vaultTokenDir" $ }}
  readOnly: true
{{- else if eq .auth "kubernetes" }}
- name: vault-jwt
  mountPath: {{ include "extension-server.vaultJwtDir" $ }}
  readOnly: true
{{- else if eq .auth "approle" }}
- name: vault-approle
  mountPath: {{ include "extension-server.vaultApproleDir" $ }}
  readOnly: true
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "extension-server.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 16Mi
{{- if include "extension-server.kubeApiNeeded" . }}
# The API-server credentials of the rotation watcher and of Events: what
# automountServiceAccountToken would mount (token, cluster CA, namespace), here only while
# one of them runs. 3607 s is what the
# kubelet asks for the automounted token; it renews it at 80 % of its lifetime and the
# server reads the file on every request. (The Vault Kubernetes-auth token is another
# volume, mounted elsewhere.)
- name: kube-api-access
  projected:
    defaultMode: 0440
    sources:
      - serviceAccountToken:
          path: token
          expirationSeconds: 3607
      - configMap:
          name: kube-root-ca.crt
          items:
            - key: ca.crt
              path: ca.crt
      - downwardAPI:
          items:
            - path: namespace
              fieldRef:
                apiVersion: v1
                fieldPath: metadata.namespace
{{- end }}
{{- if include "extension-server.tlsOn" . }}
- name: tls
  secret:
    secretName: {{ include "extension-server.tlsSecretName" . | quote }}
    defaultMode: 0440
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- with include "extension-server.clientCASecretName" . }}
- name: tls-client-ca
  secret:
    secretName: {{ . | quote }}
    defaultMode: 0440
    items:
      - key: {{ include "extension-server.clientCAKey" $ | quote }}
        path: ca.crt
{{- end }}
{{- end }}
{{- with .Values.vault }}
{{- if .addr }}
{{- if .caCert.secretName }}
- name: vault-ca
  secret:
    secretName: {{ .caCert.secretName | quote }}
    defaultMode: 0440
    items:
      - key: {{ .caCert.key | quote }}
        path: ca.crt
{{- else if .caCert.configMapName }}
- name: vault-ca
  configMap:
    name: {{ .caCert.configMapName | quote }}
    defaultMode: 0440
    items:
      - key: {{ .caCert.key | quote }}
        path: ca.crt
{{- end }}
{{- if eq .auth "token" }}
- name: vault-token
  secret:
    secretName: {{ .token.secretName | quote }}
    defaultMode: 0440
    items:
      - key: {{ .token.key | quote }}
        path: token
{{- else if eq .auth "kubernetes" }}
# A token for Vault only, projected here rather than through
# automountServiceAccountToken (which would also hand the pod an API-server token).
- name: vault-jwt
  projected:
    defaultMode: 0440
    sources:
      - serviceAccountToken:
          path: token
          expirationSeconds: {{ .kubernetes.expirationSeconds | int }}
          {{- with .kubernetes.audience }}
          audience: {{ . | quote }}
          {{- end }}
{{- else if eq .auth "approle" }}
- name: vault-approle
  secret:
    secretName: {{ .approle.secretId.secretName | quote }}
    defaultMode: 0440
    items:
      - key: {{ .approle.secretId.key | quote }}
        path: secret-id
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Pod annotations: Prometheus scraping (when metrics are on) merged with podAnnotations
(which win on a clash).
*/}}
{{- define "extension-server.podAnnotations" -}}
{{- $annotations := dict }}
{{- if and .Values.metrics.enabled .Values.metrics.podAnnotations }}
{{- $_ := set $annotations "prometheus.io/scrape" "true" }}
{{- $_ := set $annotations "prometheus.io/port" (toString .Values.metrics.port) }}
{{- $_ := set $annotations "prometheus.io/path" "/metrics" }}
{{- end }}
{{- $annotations = merge (deepCopy .Values.podAnnotations) $annotations }}
{{- include "extension-server.stringMap" $annotations }}
{{- end }}

{{/*
A map of strings (labels, annotations, a node selector), one `"key": "value"` line each,
both quoted: whatever a key or a value holds (a line break, `: `, a Unicode line
separator), it stays that one key and that one string.
*/}}
{{- define "extension-server.stringMap" -}}
{{- $lines := list }}
{{- range $key, $value := . }}
{{- $lines = append $lines (printf "%s: %s" ($key | quote) ($value | quote)) }}
{{- end }}
{{- join "\n" $lines }}
{{- end }}
