{{/* Chart name, at most 63 characters (the DNS label limit of Kubernetes names). */}}
{{- define "noctis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Release-qualified name. Component names append "-<component>" (at most 11 characters),
so the base is cut at 52 characters.
*/}}
{{- define "noctis.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "noctis.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. Call with (dict "root" $ "component" "qido"). */}}
{{- define "noctis.labels" -}}
helm.sh/chart: {{ include "noctis.chart" .root }}
{{ include "noctis.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: noctis
{{- end }}

{{/* Labels that select one component's pods. Call with (dict "root" $ "component" "qido"). */}}
{{- define "noctis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "noctis.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end }}

{{/* Name of one component's objects, e.g. "noctis-qido". */}}
{{- define "noctis.componentName" -}}
{{- printf "%s-%s" (include "noctis.fullname" .root) .component }}
{{- end }}

{{/* Image of a Noctis component: <registry>/<repositoryPrefix>/<component>:<tag>. */}}
{{- define "noctis.image" -}}
{{- $image := .root.Values.image }}
{{- $repository := printf "%s/%s" $image.repositoryPrefix .component }}
{{- if $image.registry }}
{{- $repository = printf "%s/%s" $image.registry $repository }}
{{- end }}
{{- printf "%s:%s" $repository (default .root.Chart.AppVersion $image.tag) }}
{{- end }}

{{- define "noctis.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "noctis.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Where the HTTP components fetch the keys that verify tokens: auth.jwksUrl, else, with
auth.mode internal, the chart's token service. The token service itself reads its keys
in-process, so it does not get this setting.
*/}}
{{- define "noctis.authJwksUrl" -}}
{{- if .Values.auth.jwksUrl }}
{{- .Values.auth.jwksUrl }}
{{- else if and (eq .Values.auth.mode "internal") .Values.authService.enabled }}
{{- printf "http://%s-auth:8080/auth/jwks" (include "noctis.fullname" .) }}
{{- end }}
{{- end }}

{{/* The Secret every component reads its sensitive settings from. */}}
{{- define "noctis.secretName" -}}
{{- default (printf "%s-secrets" (include "noctis.fullname" .)) .Values.secrets.existingSecret }}
{{- end }}

{{/*
The HTTP components: values key and component name (of the image and the objects).
Only those with enabled: true are deployed. Use it as
(include "noctis.httpComponents" $ | fromYaml).components.
*/}}
{{- define "noctis.httpComponents" -}}
components:
  - key: qido
    name: qido
  - key: wado
    name: wado
  - key: stow
    name: stow
  - key: events
    name: events
  - key: authService
    name: auth
{{- end }}

{{/*
Annotations that restart the pods when the shared settings change: the ConfigMap and,
when the chart creates it, the Secret.
*/}}
{{- define "noctis.configChecksums" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- if not .Values.secrets.existingSecret }}
checksum/secrets: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}
{{- end }}

{{/*
Volumes of a Noctis pod: the receive spool and /tmp, as the root filesystem is
read-only, and the Kafka CA certificates when kafka.caSecretName is set.
*/}}
{{- define "noctis.dataVolumes" -}}
- name: spool
{{- if .Values.spool.storageClassName }}
  ephemeral:
    volumeClaimTemplate:
      spec:
        accessModes: ["ReadWriteOnce"]
        storageClassName: {{ .Values.spool.storageClassName | quote }}
        resources:
          requests:
            storage: {{ .Values.spool.sizeLimit }}
{{- else }}
  emptyDir:
    sizeLimit: {{ .Values.spool.sizeLimit }}
{{- end }}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmp.sizeLimit }}
{{- with .Values.kafka.caSecretName }}
- name: kafka-ca
  secret:
    secretName: {{ . }}
{{- end }}
{{- end }}

{{- define "noctis.dataVolumeMounts" -}}
- name: spool
  mountPath: /var/lib/noctis
- name: tmp
  mountPath: /tmp
{{- if .Values.kafka.caSecretName }}
- name: kafka-ca
  mountPath: /etc/noctis/kafka
  readOnly: true
{{- end }}
{{- end }}

{{/*
Seconds a component may spend finishing work after SIGTERM: the termination grace
period less the preStop pause and a margin before Kubernetes sends SIGKILL.
*/}}
{{- define "noctis.shutdownTimeout" -}}
{{- max 1 (sub . 10) }}
{{- end }}

{{/*
preStop pause: Services and load balancers stop sending new requests and associations
a few seconds after a pod starts terminating, so it keeps serving that long first.
*/}}
{{- define "noctis.preStop" -}}
preStop:
  exec:
    command: ["sleep", "5"]
{{- end }}

{{/* envFrom of every Noctis container: the shared ConfigMap, then the Secret. */}}
{{- define "noctis.envFrom" -}}
- configMapRef:
    name: {{ include "noctis.fullname" . }}-config
- secretRef:
    name: {{ include "noctis.secretName" . }}
{{- end }}

{{/*
Scheduling fields of a pod spec from a component's values. Call with
(dict "root" $ "values" .Values.qido).
*/}}
{{- define "noctis.scheduling" -}}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
