{{/* Labels Helm adds on top of the kustomize base's `app` label. */}}
{{- define "vwire.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* The health probe command: vwire's own gRPC health client, with its SVID unless insecure. */}}
{{- define "vwire.probeCommand" -}}
{{- $cmd := list "/usr/bin/vwire" "health" "--addr" .Values.listenOn -}}
{{- if not .Values.insecure }}{{ $cmd = append $cmd "--spiffe" }}{{ end -}}
{{- toJson $cmd -}}
{{- end }}

{{/* Worker CPUs as vwire's "1,2" form, from a string or a list. */}}
{{- define "vwire.workers" -}}
{{- if kindIs "slice" .Values.workers -}}
{{- join "," .Values.workers -}}
{{- else -}}
{{- toString .Values.workers -}}
{{- end -}}
{{- end }}
