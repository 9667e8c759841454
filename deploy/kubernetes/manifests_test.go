// Package kubernetes_test validates fmtrain's Kubernetes manifests offline, the
// way `kubectl apply --dry-run=client` would and a little further: every
// document is decoded strictly into the real k8s.io/api types (an unknown or
// misspelt field, a wrong type or a bad quantity fails), and the references
// between objects that the API server would only discover at run time are
// checked: selectors against pod labels, Services against named container
// ports, probes against ports, $(VAR) expansions against env and ConfigMaps,
// volumes against claims, the StatefulSet's raft peer list against its replica
// count, and the job ConfigMap against fmtrain's own job-spec parser.
package kubernetes_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"github.com/fmtrain/fmtrain/jobspec"
)

// manifests holds every object of the directory, by kind.
type manifests struct {
	namespaces   []*corev1.Namespace
	configMaps   []*corev1.ConfigMap
	services     []*corev1.Service
	claims       []*corev1.PersistentVolumeClaim
	statefulSets []*appsv1.StatefulSet
	daemonSets   []*appsv1.DaemonSet
	jobs         []*batchv1.Job
	budgets      []*policyv1.PodDisruptionBudget
}

// workload is what the checks need of a StatefulSet, DaemonSet or Job.
type workload struct {
	name     string
	selector *metav1.LabelSelector
	pod      *corev1.PodTemplateSpec
	claims   []string // volumeClaimTemplates
}

func (m *manifests) workloads() []workload {
	var w []workload
	for _, s := range m.statefulSets {
		var claims []string
		for _, c := range s.Spec.VolumeClaimTemplates {
			claims = append(claims, c.Name)
		}
		w = append(w, workload{"StatefulSet/" + s.Name, s.Spec.Selector, &s.Spec.Template, claims})
	}
	for _, d := range m.daemonSets {
		w = append(w, workload{"DaemonSet/" + d.Name, d.Spec.Selector, &d.Spec.Template, nil})
	}
	for _, j := range m.jobs {
		w = append(w, workload{"Job/" + j.Name, j.Spec.Selector, &j.Spec.Template, nil})
	}
	return w
}

// load decodes every YAML document of the listed files strictly.
func load(t *testing.T, files []string) *manifests {
	t.Helper()
	m := &manifests{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range splitDocuments(raw) {
			where := fmt.Sprintf("%s document %d", filepath.Base(f), i+1)
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal(doc, &tm); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			var obj any
			switch tm.APIVersion + " " + tm.Kind {
			case "v1 Namespace":
				o := &corev1.Namespace{}
				m.namespaces, obj = append(m.namespaces, o), o
			case "v1 ConfigMap":
				o := &corev1.ConfigMap{}
				m.configMaps, obj = append(m.configMaps, o), o
			case "v1 Service":
				o := &corev1.Service{}
				m.services, obj = append(m.services, o), o
			case "v1 PersistentVolumeClaim":
				o := &corev1.PersistentVolumeClaim{}
				m.claims, obj = append(m.claims, o), o
			case "apps/v1 StatefulSet":
				o := &appsv1.StatefulSet{}
				m.statefulSets, obj = append(m.statefulSets, o), o
			case "apps/v1 DaemonSet":
				o := &appsv1.DaemonSet{}
				m.daemonSets, obj = append(m.daemonSets, o), o
			case "batch/v1 Job":
				o := &batchv1.Job{}
				m.jobs, obj = append(m.jobs, o), o
			case "policy/v1 PodDisruptionBudget":
				o := &policyv1.PodDisruptionBudget{}
				m.budgets, obj = append(m.budgets, o), o
			default:
				t.Fatalf("%s: unexpected apiVersion %q kind %q (add it to this test)", where, tm.APIVersion, tm.Kind)
			}
			if err := yaml.UnmarshalStrict(doc, obj); err != nil {
				t.Fatalf("%s (%s): %v", where, tm.Kind, err)
			}
			meta := obj.(metav1.Object)
			if errs := validation.IsDNS1123Subdomain(meta.GetName()); len(errs) > 0 {
				t.Errorf("%s: %s name %q: %s", where, tm.Kind, meta.GetName(), strings.Join(errs, "; "))
			}
		}
	}
	return m
}

func splitDocuments(raw []byte) [][]byte {
	var docs [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(raw), -1) {
		if strings.TrimSpace(stripComments(d)) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

func stripComments(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// kustomization is the part of kustomization.yaml the checks read.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name   string `json:"name"`
		NewTag string `json:"newTag"`
	} `json:"images"`
}

func loadDir(t *testing.T) (*manifests, kustomization) {
	t.Helper()
	raw, err := os.ReadFile("kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := yaml.UnmarshalStrict(raw, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	files = slices.DeleteFunc(files, func(f string) bool { return f == "kustomization.yaml" })
	slices.Sort(files)
	listed := slices.Clone(k.Resources)
	slices.Sort(listed)
	if !slices.Equal(files, listed) {
		t.Fatalf("kustomization.yaml resources %v, directory has %v: every manifest must be listed", listed, files)
	}
	return load(t, files), k
}

func TestManifestsDecodeStrictly(t *testing.T) {
	m, k := loadDir(t)
	if len(m.namespaces) != 1 || m.namespaces[0].Name != k.Namespace {
		t.Errorf("want one Namespace named %q (kustomization namespace)", k.Namespace)
	}
	if len(m.statefulSets) != 1 || len(m.daemonSets) != 1 {
		t.Fatalf("want one coordinator StatefulSet and one worker DaemonSet, got %d and %d", len(m.statefulSets), len(m.daemonSets))
	}
	for _, img := range k.Images {
		found := false
		for _, w := range m.workloads() {
			for _, c := range w.pod.Spec.Containers {
				found = found || c.Image == img.Name
			}
		}
		if !found {
			t.Errorf("kustomization images: %q is used by no container", img.Name)
		}
	}
}

func TestWorkloadsAreWiredUp(t *testing.T) {
	m, _ := loadDir(t)
	configKeys := map[string][]string{}
	for _, cm := range m.configMaps {
		for key := range cm.Data {
			configKeys[cm.Name] = append(configKeys[cm.Name], key)
		}
	}
	var claimNames []string
	for _, c := range m.claims {
		claimNames = append(claimNames, c.Name)
	}
	for _, w := range m.workloads() {
		// A Job's selector is generated by the API server; the others must
		// select their own pods.
		if w.selector != nil || !strings.HasPrefix(w.name, "Job/") {
			sel, err := metav1.LabelSelectorAsSelector(w.selector)
			if err != nil || w.selector == nil {
				t.Errorf("%s: selector missing or invalid: %v", w.name, err)
			} else if !sel.Matches(labels.Set(w.pod.Labels)) {
				t.Errorf("%s: selector %s does not match the pod labels %v", w.name, sel, w.pod.Labels)
			}
		}
		volumes := slices.Clone(w.claims)
		for _, v := range w.pod.Spec.Volumes {
			volumes = append(volumes, v.Name)
			if v.PersistentVolumeClaim != nil && !slices.Contains(claimNames, v.PersistentVolumeClaim.ClaimName) {
				t.Errorf("%s: volume %s claims %q, which is not in the manifests", w.name, v.Name, v.PersistentVolumeClaim.ClaimName)
			}
			if v.ConfigMap != nil && configKeys[v.ConfigMap.Name] == nil {
				t.Errorf("%s: volume %s uses ConfigMap %q, which is not in the manifests", w.name, v.Name, v.ConfigMap.Name)
			}
		}
		if sc := w.pod.Spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
			t.Errorf("%s: pods must set securityContext.runAsNonRoot (the images run as uid 65532)", w.name)
		}
		for _, c := range w.pod.Spec.Containers {
			checkContainer(t, w, c, volumes, configKeys)
		}
	}
}

func checkContainer(t *testing.T, w workload, c corev1.Container, volumes []string, configKeys map[string][]string) {
	where := w.name + " container " + c.Name
	if c.Image == "" {
		t.Errorf("%s: no image", where)
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if q, ok := c.Resources.Requests[r]; !ok || q.IsZero() {
			t.Errorf("%s: no %s request", where, r)
		}
	}
	if q, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok || q.Cmp(c.Resources.Requests[corev1.ResourceMemory]) < 0 {
		t.Errorf("%s: memory limit missing or below the request", where)
	}
	ports := map[string]bool{}
	for _, p := range c.Ports {
		ports[p.Name] = true
	}
	if !strings.HasPrefix(w.name, "Job/") {
		if c.LivenessProbe == nil || c.ReadinessProbe == nil {
			t.Errorf("%s: needs liveness and readiness probes", where)
		}
		for name, p := range map[string]*corev1.Probe{"startup": c.StartupProbe, "liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
			if p == nil {
				continue
			}
			if p.HTTPGet == nil {
				t.Errorf("%s: %s probe: want httpGet on /healthz or /readyz", where, name)
				continue
			}
			if port := p.HTTPGet.Port.String(); !ports[port] {
				t.Errorf("%s: %s probe uses port %q, not a named container port", where, name, port)
			}
			want := map[string]string{"readiness": "/readyz"}[name]
			if want == "" {
				want = "/healthz"
			}
			if p.HTTPGet.Path != want {
				t.Errorf("%s: %s probe path %q, want %q", where, name, p.HTTPGet.Path, want)
			}
		}
	}
	for _, vm := range c.VolumeMounts {
		if !slices.Contains(volumes, vm.Name) {
			t.Errorf("%s: mounts volume %q, which the pod does not define", where, vm.Name)
		}
	}
	// $(VAR) in args is expanded by the kubelet from env and envFrom; an
	// unknown name is left as the literal text, which is never what we mean.
	defined := map[string]bool{}
	for _, e := range c.Env {
		defined[e.Name] = true
		if e.ValueFrom != nil && e.ValueFrom.FieldRef == nil {
			t.Errorf("%s: env %s: only fieldRef values are used here", where, e.Name)
		}
	}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef == nil {
			t.Errorf("%s: envFrom without a configMapRef", where)
			continue
		}
		keys, ok := configKeys[ef.ConfigMapRef.Name]
		if !ok {
			t.Errorf("%s: envFrom ConfigMap %q is not in the manifests", where, ef.ConfigMapRef.Name)
		}
		for _, k := range keys {
			defined[k] = true
		}
	}
	for _, arg := range append(slices.Clone(c.Command), c.Args...) {
		for _, ref := range regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`).FindAllStringSubmatch(arg, -1) {
			if !defined[ref[1]] {
				t.Errorf("%s: argument %q refers to $(%s), which is not in env or envFrom", where, arg, ref[1])
			}
		}
	}
}

func TestServicesSelectPorts(t *testing.T) {
	m, _ := loadDir(t)
	for _, svc := range m.services {
		var matched []workload
		for _, w := range m.workloads() {
			if len(svc.Spec.Selector) > 0 && labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(w.pod.Labels)) {
				matched = append(matched, w)
			}
		}
		if len(matched) == 0 {
			t.Errorf("Service %s: selector %v matches no workload", svc.Name, svc.Spec.Selector)
			continue
		}
		for _, p := range svc.Spec.Ports {
			for _, w := range matched {
				found := false
				for _, c := range w.pod.Spec.Containers {
					for _, cp := range c.Ports {
						found = found || cp.Name == p.TargetPort.String() || cp.ContainerPort == p.TargetPort.IntVal
					}
				}
				if !found {
					t.Errorf("Service %s port %s: targetPort %q is not a port of %s", svc.Name, p.Name, p.TargetPort.String(), w.name)
				}
			}
		}
	}
	for _, pdb := range m.budgets {
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil {
			t.Fatalf("PodDisruptionBudget %s: %v", pdb.Name, err)
		}
		for _, s := range m.statefulSets {
			if sel.Matches(labels.Set(s.Spec.Template.Labels)) && pdb.Spec.MinAvailable.IntValue() <= int(*s.Spec.Replicas)/2 {
				t.Errorf("PodDisruptionBudget %s: minAvailable %s would let a drain break the raft quorum of %d", pdb.Name, pdb.Spec.MinAvailable.String(), *s.Spec.Replicas)
			}
		}
	}
}

// The coordinators' raft identities come from the StatefulSet: pod i is
// "<name>-i", and the initial peer list must name exactly those, at the
// headless Service's DNS names, which must resolve before pods are ready.
func TestCoordinatorRaftIdentities(t *testing.T) {
	m, _ := loadDir(t)
	sts := m.statefulSets[0]
	var headless *corev1.Service
	for _, s := range m.services {
		if s.Name == sts.Spec.ServiceName {
			headless = s
		}
	}
	if headless == nil || headless.Spec.ClusterIP != corev1.ClusterIPNone || !headless.Spec.PublishNotReadyAddresses {
		t.Fatalf("StatefulSet %s: serviceName %q must be a headless Service with publishNotReadyAddresses", sts.Name, sts.Spec.ServiceName)
	}
	if sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("StatefulSet %s: podManagementPolicy must be Parallel (one member alone never becomes ready)", sts.Name)
	}
	if len(sts.Spec.VolumeClaimTemplates) == 0 {
		t.Errorf("StatefulSet %s: needs a volumeClaimTemplate for the raft data", sts.Name)
	}
	replicas := int(*sts.Spec.Replicas)
	if replicas%2 == 0 {
		t.Errorf("StatefulSet %s: %d replicas; raft wants an odd number", sts.Name, replicas)
	}
	args := sts.Spec.Template.Spec.Containers[0].Args
	peers := flagValue(args, "--peers")
	id := flagValue(args, "--id")
	if id != "$(POD_NAME)" {
		t.Errorf("--id = %q, want $(POD_NAME) (the stable StatefulSet identity)", id)
	}
	var want []string
	for i := range replicas {
		pod := fmt.Sprintf("%s-%d", sts.Name, i)
		want = append(want, fmt.Sprintf("%s=%s.%s.$(POD_NAMESPACE).svc:7000", pod, pod, headless.Name))
	}
	if got := strings.Split(peers, ","); !slices.Equal(got, want) {
		t.Errorf("--peers:\n got %v\nwant %v", got, want)
	}
}

func flagValue(args []string, name string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}

func TestWorkersHoldOneGPU(t *testing.T) {
	m, _ := loadDir(t)
	ds := m.daemonSets[0]
	c := ds.Spec.Template.Spec.Containers[0]
	gpu := c.Resources.Limits["nvidia.com/gpu"]
	if gpu.Value() != 1 {
		t.Errorf("DaemonSet %s: nvidia.com/gpu limit = %s, want 1 (one worker per GPU)", ds.Name, gpu.String())
	}
	if flagValue(c.Args, "--device") != "cuda:0" {
		t.Errorf("DaemonSet %s: --device = %q, want cuda:0 (the one GPU the device plugin exposes)", ds.Name, flagValue(c.Args, "--device"))
	}
	if ds.Spec.Template.Spec.TerminationGracePeriodSeconds == nil || *ds.Spec.Template.Spec.TerminationGracePeriodSeconds < 60 {
		t.Errorf("DaemonSet %s: terminationGracePeriodSeconds must leave the worker time to drain", ds.Name)
	}
}

func TestJobConfigMapIsAValidJobSpec(t *testing.T) {
	m, _ := loadDir(t)
	n := 0
	for _, cm := range m.configMaps {
		for key, val := range cm.Data {
			if !strings.HasSuffix(key, ".yaml") {
				continue
			}
			n++
			spec, err := jobspec.Parse([]byte(val))
			if err != nil {
				t.Errorf("ConfigMap %s key %s: %v", cm.Name, key, err)
				continue
			}
			if !strings.HasPrefix(spec.Data.Manifest, "/shared/") || !strings.HasPrefix(spec.Checkpoint.CheckpointDir, "/shared/") {
				t.Errorf("ConfigMap %s: data and checkpoints must live on the shared volume (/shared), got %q and %q",
					cm.Name, spec.Data.Manifest, spec.Checkpoint.CheckpointDir)
			}
		}
	}
	if n == 0 {
		t.Fatal("no ConfigMap carries a job spec (*.yaml key)")
	}
}

// The checks above must be able to fail: a manifest with a misspelt field and
// one with a selector that misses its pods are rejected.
func TestStrictDecodingRejectsMistakes(t *testing.T) {
	bad := []byte("apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: x}\nspec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec:\n      containers:\n        - name: c\n          image: i\n          resorces: {}\n")
	if err := yaml.UnmarshalStrict(bad, &appsv1.DaemonSet{}); err == nil || !strings.Contains(err.Error(), "resorces") {
		t.Fatalf("misspelt field: got %v, want an error naming it", err)
	}
	badQty := []byte("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: x}\nspec:\n  resources:\n    requests:\n      storage: 5 GB\n")
	if err := yaml.UnmarshalStrict(badQty, &corev1.PersistentVolumeClaim{}); err == nil {
		t.Fatal("bad quantity \"5 GB\": decoded without error")
	}
	if got := splitDocuments([]byte("# only a comment\n---\na: 1\n---\n")); len(got) != 1 || !bytes.Contains(got[0], []byte("a: 1")) {
		t.Fatalf("splitDocuments: got %q", got)
	}
}
