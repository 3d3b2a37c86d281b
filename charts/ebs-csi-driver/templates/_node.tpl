{{/*
One node DaemonSet (argument: dict "root" $ "name" <DaemonSet name> "node"
<the node values>): node.yaml renders it for `node` and for each entry of
additionalDaemonSets (node values with the entry merged over them).
*/}}
{{- define "ebs-csi-driver.nodeDaemonSet" -}}
{{- $root := .root }}
{{- $n := .node }}
{{- $name := .name }}
{{- $sc := $root.Values.sidecars }}
{{- $kubelet := trimSuffix "/" $n.kubeletPath }}
{{- $pluginDir := printf "%s/plugins/ebs.csi.aws.com" $kubelet }}
{{- $debug := $root.Values.debugLogs | default false }}
{{- /* reservedVolumeAttachments -1 (the reference chart's "unset") or null: the driver counts them. */}}
{{- $reserved := $n.reservedVolumeAttachments }}
{{- $hasReserved := and (not (kindIs "invalid" $reserved)) (ge (int $reserved) 0) }}
{{- if and (not (kindIs "invalid" $n.volumeAttachLimit)) $hasReserved }}
{{- fail (printf "%s: node.volumeAttachLimit and node.reservedVolumeAttachments are mutually exclusive: set one" $name) }}
{{- end }}
# Node: the driver in `node` mode on every node; privileged because it formats
# and mounts block devices, sharing kubelet's mounts (Bidirectional).
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {{ $name }}
  namespace: {{ include "ebs-csi-driver.nodeNamespace" $root }}
  labels:
    {{- include "ebs-csi-driver.labels" $root | nindent 4 }}
    app: {{ $name }}
  {{- with $n.daemonSetAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- if not (kindIs "invalid" $n.revisionHistoryLimit) }}
  revisionHistoryLimit: {{ $n.revisionHistoryLimit }}
  {{- end }}
  {{- with $n.updateStrategy }}
  updateStrategy:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  selector:
    matchLabels:
      app: {{ $name }}
      {{- include "ebs-csi-driver.selectorLabels" $root | nindent 6 }}
  template:
    metadata:
      labels:
        app: {{ $name }}
        {{- include "ebs-csi-driver.selectorLabels" $root | nindent 8 }}
        {{- with $n.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $n.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      serviceAccountName: {{ $n.serviceAccount.name }}
      priorityClassName: {{ $n.priorityClassName | default "system-node-critical" }}
      # Leaves the preStop hook time to wait for the node's volumes to detach.
      terminationGracePeriodSeconds: {{ $n.terminationGracePeriodSeconds }}
      {{- if $n.hostNetwork }}
      hostNetwork: true
      dnsPolicy: ClusterFirstWithHostNet
      {{- end }}
      {{- with $n.dnsConfig }}
      dnsConfig:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      nodeSelector:
        kubernetes.io/os: linux
        {{- with $n.nodeSelector }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $n.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      tolerations:
        {{- if $n.tolerateAllTaints }}
        - operator: Exists
        {{- else }}
        {{- with $n.tolerations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
        {{- include "ebs-csi-driver.nodeTolerations" $root | nindent 8 }}
        {{- end }}
      {{- with $n.securityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with include "ebs-csi-driver.imagePullSecrets" $root | trim }}{{ . | nindent 6 }}{{- end }}
      {{- with $n.initContainers }}
      initContainers:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: ebs-plugin
          image: {{ include "ebs-csi-driver.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args:
            - node
            - --endpoint=$(CSI_ENDPOINT)
            {{- if not (kindIs "invalid" $n.volumeAttachLimit) }}
            - --volume-attach-limit={{ $n.volumeAttachLimit }}
            {{- end }}
            {{- if $hasReserved }}
            - --reserved-volume-attachments={{ $reserved }}
            {{- end }}
            {{- with $n.metadataSources }}
            - --metadata-sources={{ kindIs "slice" . | ternary (join "," .) . }}
            {{- end }}
            {{- if $n.legacyXFS }}
            - --legacy-xfs=true
            {{- end }}
            {{- if $n.enableMetrics }}
            - --http-endpoint=0.0.0.0:{{ $n.metricsPort }}
            {{- end }}
            - --logging-format={{ $n.loggingFormat }}
            - -v={{ ternary 7 $n.logLevel $debug }}
            {{- range $n.additionalArgs }}
            - {{ . }}
            {{- end }}
          env:
            - name: CSI_ENDPOINT
              value: unix:/csi/csi.sock
            # The node's name: its Node object (metadata source `kubernetes`,
            # startup taint) and the preStop hook's VolumeAttachment watch.
            - name: CSI_NODE_NAME
              valueFrom:
                fieldRef:
                  fieldPath: spec.nodeName
            {{- with include "ebs-csi-driver.proxyEnv" $root | trim }}{{ . | nindent 12 }}{{- end }}
            {{- if ($n.serviceAccount.disableMutation | default false) }}
            - name: DISABLE_TAINT_WATCHER
              value: "true"
            {{- end }}
            {{- with $n.env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- with $n.envFrom }}
          envFrom:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          volumeMounts:
            - name: kubelet-dir
              mountPath: {{ $kubelet }}
              mountPropagation: Bidirectional
            - name: plugin-dir
              mountPath: /csi
            - name: device-dir
              mountPath: /dev
            {{- if $n.selinux }}
            - name: selinux-sysfs
              mountPath: /sys/fs/selinux
            - name: selinux-config
              mountPath: /etc/selinux/config
              readOnly: true
            {{- end }}
            {{- with $n.volumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            - name: healthz
              containerPort: 9808
              protocol: TCP
            {{- if $n.enableMetrics }}
            - name: metrics
              containerPort: {{ $n.metricsPort }}
              protocol: TCP
            {{- end }}
          livenessProbe:
            httpGet:
              path: /healthz
              port: healthz
            initialDelaySeconds: 10
            timeoutSeconds: 3
            periodSeconds: 10
            failureThreshold: 5
          # On a draining node, waits (up to terminationGracePeriodSeconds)
          # until no VolumeAttachment names this node, so the volumes are
          # unmounted and detached before the driver goes away.
          lifecycle:
            preStop:
              exec:
                command: ["/usr/bin/ebs-csi-driver", "pre-stop-hook"]
          {{- with $n.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with $n.containerSecurityContext }}
          securityContext:
            {{- toYaml . | nindent 12 }}
          {{- end }}
        - name: node-driver-registrar
          {{- include "ebs-csi-driver.sidecarImage" (dict "root" $root "sidecar" $sc.nodeDriverRegistrar) | nindent 10 }}
          args:
            - --csi-address=$(ADDRESS)
            - --kubelet-registration-path=$(DRIVER_REG_SOCK_PATH)
            - --http-endpoint=0.0.0.0:{{ $sc.nodeDriverRegistrar.healthPort }}
            {{- include "ebs-csi-driver.sidecarVerbosity" (dict "root" $root "sidecar" $sc.nodeDriverRegistrar) | nindent 12 }}
            {{- range $sc.nodeDriverRegistrar.additionalArgs }}
            - {{ . }}
            {{- end }}
          env:
            - name: ADDRESS
              value: /csi/csi.sock
            - name: DRIVER_REG_SOCK_PATH
              value: {{ $pluginDir }}/csi.sock
            {{- with include "ebs-csi-driver.proxyEnv" $root | trim }}{{ . | nindent 12 }}{{- end }}
            {{- with $sc.nodeDriverRegistrar.env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            - name: healthz-ndr
              containerPort: {{ $sc.nodeDriverRegistrar.healthPort }}
              protocol: TCP
          {{- with $sc.nodeDriverRegistrar.livenessProbe }}
          livenessProbe:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          volumeMounts:
            - name: plugin-dir
              mountPath: /csi
            - name: registration-dir
              mountPath: /registration
            - name: probe-dir
              mountPath: {{ $pluginDir }}/
          resources:
            {{- toYaml ($sc.nodeDriverRegistrar.resources | default $n.resources) | nindent 12 }}
          {{- with $sc.nodeDriverRegistrar.securityContext }}
          securityContext:
            {{- toYaml . | nindent 12 }}
          {{- end }}
        - name: liveness-probe
          {{- include "ebs-csi-driver.sidecarImage" (dict "root" $root "sidecar" $sc.livenessProbe) | nindent 10 }}
          args:
            - --csi-address=/csi/csi.sock
            {{- range $sc.livenessProbe.additionalArgs }}
            - {{ . }}
            {{- end }}
          volumeMounts:
            - name: plugin-dir
              mountPath: /csi
          resources:
            {{- toYaml ($sc.livenessProbe.resources | default $n.resources) | nindent 12 }}
          {{- with $sc.livenessProbe.securityContext }}
          securityContext:
            {{- toYaml . | nindent 12 }}
          {{- end }}
      volumes:
        - name: kubelet-dir
          hostPath:
            path: {{ $kubelet }}
            type: Directory
        - name: plugin-dir
          hostPath:
            path: {{ $pluginDir }}/
            type: DirectoryOrCreate
        - name: registration-dir
          hostPath:
            path: {{ $kubelet }}/plugins_registry/
            type: Directory
        - name: device-dir
          hostPath:
            path: /dev
            type: Directory
        {{- if $n.selinux }}
        - name: selinux-sysfs
          hostPath:
            path: /sys/fs/selinux
            type: Directory
        - name: selinux-config
          hostPath:
            path: /etc/selinux/config
            type: File
        {{- end }}
        - name: probe-dir
          {{- toYaml ($n.probeDirVolume | default (dict "emptyDir" (dict))) | nindent 10 }}
        {{- with $n.volumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
{{- end }}
