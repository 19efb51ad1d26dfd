{{/* Chart name, truncated to the 63-character DNS label limit. */}}
{{- define "telesafe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name. */}}
{{- define "telesafe.fullname" -}}
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

{{- define "telesafe.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "telesafe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "telesafe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "telesafe.labels" -}}
helm.sh/chart: {{ include "telesafe.chart" . }}
{{ include "telesafe.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: telesafe
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "telesafe.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "telesafe.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "telesafe.headlessServiceName" -}}
{{- printf "%s-headless" (include "telesafe.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "telesafe.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding the SASL password (existing, or the one this chart makes). */}}
{{- define "telesafe.saslSecretName" -}}
{{- if .Values.kafka.sasl.existingSecret }}
{{- .Values.kafka.sasl.existingSecret }}
{{- else }}
{{- printf "%s-kafka-sasl" (include "telesafe.fullname" .) }}
{{- end }}
{{- end }}

{{/*
Checks that fail rendering with a message saying what to set. Included by the StatefulSet,
so `helm template`, `helm lint` and `helm install` all stop on them.
*/}}
{{- define "telesafe.validate" -}}
{{- if not .Values.operators }}
{{- fail "telesafe: `operators` is REQUIRED: the list of operator ids allowed to re-arm a safe-stop (TELESAFE_OPERATORS), e.g. --set 'operators={dr-smith,dr-jones}'. The monitor would otherwise accept a re-arm from ANY operator id." }}
{{- end }}
{{- range .Values.operators }}
{{- if or (contains "," .) (regexMatch "\\s" .) (eq . "") }}
{{- fail (printf "telesafe: operator id %q must not be empty or contain commas or spaces" .) }}
{{- end }}
{{- end }}
{{- if not .Values.kafka.bootstrapServers }}
{{- fail "telesafe: `kafka.bootstrapServers` is REQUIRED, e.g. --set kafka.bootstrapServers=kafka-bootstrap.kafka:9092" }}
{{- end }}
{{- if and (not .Values.signingKey.existingSecret) (not .Values.signingKey.generateOnVolume) }}
{{- fail "telesafe: `signingKey.existingSecret` is REQUIRED: a Secret with the Ed25519 ledger signing key (`telesafe audit keygen`; key name signingKey.secretKey). For development only, set signingKey.generateOnVolume=true." }}
{{- end }}
{{- $proto := .Values.kafka.securityProtocol }}
{{- if hasPrefix "SASL_" $proto }}
{{- if not .Values.kafka.sasl.mechanism }}
{{- fail (printf "telesafe: kafka.securityProtocol=%s needs kafka.sasl.mechanism (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)" $proto) }}
{{- end }}
{{- if not .Values.kafka.sasl.username }}
{{- fail (printf "telesafe: kafka.securityProtocol=%s needs kafka.sasl.username" $proto) }}
{{- end }}
{{- if and (not .Values.kafka.sasl.existingSecret) (not .Values.kafka.sasl.password) }}
{{- fail (printf "telesafe: kafka.securityProtocol=%s needs kafka.sasl.existingSecret (a Secret with key kafka.sasl.passwordKey)" $proto) }}
{{- end }}
{{- else if .Values.kafka.sasl.mechanism }}
{{- fail (printf "telesafe: kafka.sasl.mechanism is set but kafka.securityProtocol=%s is not SASL_PLAINTEXT or SASL_SSL" $proto) }}
{{- end }}
{{- if and .Values.kafka.tls.existingSecret (not (hasSuffix "SSL" $proto)) }}
{{- fail (printf "telesafe: kafka.tls.existingSecret is set but kafka.securityProtocol=%s does not use TLS (SSL or SASL_SSL)" $proto) }}
{{- end }}
{{- if ne (empty .Values.kafka.tls.certKey) (empty .Values.kafka.tls.keyKey) }}
{{- fail "telesafe: set both kafka.tls.certKey and kafka.tls.keyKey (mutual TLS) or neither" }}
{{- end }}
{{- if and .Values.pdb.create (not (kindIs "invalid" .Values.pdb.minAvailable)) (not (kindIs "invalid" .Values.pdb.maxUnavailable)) }}
{{- fail "telesafe: set only one of pdb.minAvailable and pdb.maxUnavailable (the other to null)" }}
{{- end }}
{{- end }}

{{/* True (non-empty) when the Prometheus Operator API is served or the check is off. */}}
{{- define "telesafe.requireMonitoringCRD" -}}
{{- $what := index . 0 }}{{- $cfg := index . 1 }}{{- $root := index . 2 }}
{{- if and $cfg.requireCRD (not ($root.Capabilities.APIVersions.Has "monitoring.coreos.com/v1")) }}
{{- fail (printf "telesafe: %s.enabled=true but the cluster does not serve monitoring.coreos.com/v1 (Prometheus Operator CRDs). Install the operator, or set %s.enabled=false to run WITHOUT it, or %s.requireCRD=false; with `helm template` pass --api-versions monitoring.coreos.com/v1." $what $what $what) }}
{{- end }}
{{- end }}

{{/* Where the Kafka TLS Secret is mounted (monitor and archive). */}}
{{- define "telesafe.kafkaTlsDir" -}}
/etc/telesafe/kafka-tls
{{- end }}

{{/* The Kafka connection environment of a telesafe container, as the chart's principal
     (kafka.sasl). */}}
{{- define "telesafe.kafkaEnv" -}}
{{- include "telesafe.kafkaEnvFor" (dict "root" . "username" .Values.kafka.sasl.username "secret" (include "telesafe.saslSecretName" .) "key" .Values.kafka.sasl.passwordKey) }}
{{- end }}

{{/* The Kafka connection environment as a given SASL principal: (dict "root" .
     "username" U "secret" SECRET "key" KEY). The archive uses its own (archive.sasl). */}}
{{- define "telesafe.kafkaEnvFor" -}}
{{- $root := .root -}}
{{- $tlsDir := include "telesafe.kafkaTlsDir" $root -}}
- name: TELESAFE_BOOTSTRAP
  value: {{ $root.Values.kafka.bootstrapServers | quote }}
- name: TELESAFE_TOPIC_PREFIX
  value: {{ $root.Values.kafka.topicPrefix | quote }}
- name: TELESAFE_SECURITY_PROTOCOL
  value: {{ $root.Values.kafka.securityProtocol | quote }}
{{- if hasPrefix "SASL_" $root.Values.kafka.securityProtocol }}
- name: TELESAFE_SASL_MECHANISM
  value: {{ $root.Values.kafka.sasl.mechanism | quote }}
- name: TELESAFE_SASL_USERNAME
  value: {{ .username | quote }}
- name: TELESAFE_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .key }}
{{- end }}
{{- if $root.Values.kafka.tls.existingSecret }}
{{- if $root.Values.kafka.tls.caKey }}
- name: TELESAFE_SSL_CAFILE
  value: {{ printf "%s/%s" $tlsDir $root.Values.kafka.tls.caKey | quote }}
{{- end }}
{{- if $root.Values.kafka.tls.certKey }}
- name: TELESAFE_SSL_CERTFILE
  value: {{ printf "%s/%s" $tlsDir $root.Values.kafka.tls.certKey | quote }}
- name: TELESAFE_SSL_KEYFILE
  value: {{ printf "%s/%s" $tlsDir $root.Values.kafka.tls.keyKey | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/* The Kafka TLS Secret volume (empty without kafka.tls.existingSecret). */}}
{{- define "telesafe.kafkaTlsVolume" -}}
{{- if .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  secret:
    secretName: {{ .Values.kafka.tls.existingSecret }}
    defaultMode: 0440
    items:
      {{- if .Values.kafka.tls.caKey }}
      - key: {{ .Values.kafka.tls.caKey }}
        path: {{ .Values.kafka.tls.caKey }}
      {{- end }}
      {{- if .Values.kafka.tls.certKey }}
      - key: {{ .Values.kafka.tls.certKey }}
        path: {{ .Values.kafka.tls.certKey }}
      - key: {{ .Values.kafka.tls.keyKey }}
        path: {{ .Values.kafka.tls.keyKey }}
      {{- end }}
{{- end }}
{{- end }}

{{/* The governance archive: its name and its pods' labels (its own app name, so that no
selector of the monitors' StatefulSet, Services, PDB or NetworkPolicy matches it). */}}
{{- define "telesafe.archiveName" -}}
{{- printf "%s-archive" (include "telesafe.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "telesafe.archiveSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-archive" (include "telesafe.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "telesafe.archiveLabels" -}}
helm.sh/chart: {{ include "telesafe.chart" . }}
{{ include "telesafe.archiveSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: telesafe
app.kubernetes.io/component: archive
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Ingress (metrics from Prometheus) and egress (Kafka, DNS) of the monitor and archive
pods, indented for `spec`. */}}
{{- define "telesafe.networkPolicyRules" -}}
ingress:
  - ports:
      - port: metrics
        protocol: TCP
    {{- $m := .Values.networkPolicy.metrics }}
    {{- if or $m.namespaceSelector $m.podSelector }}
    from:
      - {{- with $m.namespaceSelector }}
        namespaceSelector:
          {{- toYaml . | nindent 10 }}
        {{- end }}
        {{- with $m.podSelector }}
        podSelector:
          {{- toYaml . | nindent 10 }}
        {{- end }}
    {{- end }}
  {{- with .Values.networkPolicy.extraIngress }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
egress:
  # Kafka brokers
  - ports:
      {{- range .Values.networkPolicy.kafka.ports }}
      - port: {{ . }}
        protocol: TCP
      {{- end }}
    {{- with .Values.networkPolicy.kafka.to }}
    to:
      {{- toYaml . | nindent 6 }}
    {{- end }}
  # DNS
  - ports:
      - port: 53
        protocol: UDP
      - port: 53
        protocol: TCP
    {{- with .Values.networkPolicy.dns.to }}
    to:
      {{- toYaml . | nindent 6 }}
    {{- end }}
  {{- with .Values.networkPolicy.extraEgress }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/* Checks of the archive's values (included by its template). */}}
{{- define "telesafe.validateArchive" -}}
{{- $a := .Values.archive }}
{{- if not (or $a.existingConfigMap $a.trustedKeys $a.publicKey) }}
{{- fail "telesafe: archive.enabled=true needs its trust anchors: archive.publicKey (the PEM public key of signingKey, trusted for every instance), archive.trustedKeys (a trusted-keys file) or archive.existingConfigMap" }}
{{- end }}
{{- if and $a.publicKey (not (contains "BEGIN PUBLIC KEY" $a.publicKey)) }}
{{- fail "telesafe: archive.publicKey must be a PEM public key (-----BEGIN PUBLIC KEY-----), e.g. the KEY.pub written by `telesafe audit keygen`" }}
{{- end }}
{{- end }}
