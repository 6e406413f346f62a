// Command main is conveyor's vCenter simulator: govmomi's vcsim engine with an
// inventory shaped like a production DC/OS cluster on vSphere, plus the faults the
// vSphere API itself cannot set (a nearly full datastore, a red alarm, a
// disconnected host). It prints one JSON line on stdout when it is ready.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io/ioutil"
	"log"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/simulator/esx"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

type options struct {
	listen, username, certFile, keyFile, certOut              string
	datacenter, cluster, hostPrefix, agentPrefix, agentSuffix string
	agentFolder, agentAttr, agentAttrValue, agentIPBase       string
	clusterStatus                                             string
	hosts, agents, agentFrom, vms, hostCores, hostMemGB       int
	datastoreFreePct, datastoreCapGB                          float64
	redAlarms, yellowAlarms, disconnected                     listFlag
}

func parseFlags() *options {
	o := &options{}
	flag.StringVar(&o.listen, "listen", "127.0.0.1:0", "address to listen on (loopback only)")
	flag.StringVar(&o.username, "username", "administrator@vsphere.local", "login user")
	flag.StringVar(&o.certFile, "cert", "", "PEM certificate to serve (default: a fresh self-signed one)")
	flag.StringVar(&o.keyFile, "key", "", "PEM private key of --cert")
	flag.StringVar(&o.certOut, "cert-out", "", "where to write the generated certificate (default: a temp file)")
	flag.StringVar(&o.datacenter, "datacenter", "dc1", "datacenter name")
	flag.StringVar(&o.cluster, "cluster", "dcos-production", "cluster name")
	flag.StringVar(&o.hostPrefix, "host-prefix", "esx-", "ESXi host name prefix")
	flag.StringVar(&o.agentPrefix, "agent-prefix", "production-agent-", "agent VM name prefix")
	flag.StringVar(&o.agentSuffix, "agent-suffix", ".example", "appended to the VM name to form the guest hostname")
	flag.StringVar(&o.agentFolder, "agent-folder", "dcos-agents", "VM folder of the agent VMs")
	flag.StringVar(&o.agentAttr, "agent-attribute", "dcos-role", "custom attribute set on agent VMs")
	flag.StringVar(&o.agentAttrValue, "agent-attribute-value", "agent", "its value")
	flag.StringVar(&o.agentIPBase, "agent-ip-base", "10.20.0.", "agent guest IPs are this prefix plus the index")
	flag.StringVar(&o.clusterStatus, "cluster-status", "green", "cluster overall status: green, yellow or red")
	flag.IntVar(&o.hosts, "hosts", 3, "ESXi hosts in the cluster")
	flag.IntVar(&o.agents, "agents", 3, "DC/OS agent VMs")
	flag.IntVar(&o.agentFrom, "agent-index-from", 1, "index of the first agent")
	flag.IntVar(&o.vms, "vms", 0, "extra (non-agent) VMs")
	flag.IntVar(&o.hostCores, "host-cpu-cores", 16, "CPU cores per host")
	flag.IntVar(&o.hostMemGB, "host-mem-gb", 128, "memory per host in GiB")
	flag.Float64Var(&o.datastoreFreePct, "datastore-free-pct", 60, "free space of every datastore, in percent")
	flag.Float64Var(&o.datastoreCapGB, "datastore-capacity-gb", 4096, "capacity of every datastore, in GiB")
	flag.Var(&o.redAlarms, "red-alarm-on", "inventory name carrying a triggered red alarm (repeatable)")
	flag.Var(&o.yellowAlarms, "yellow-alarm-on", "inventory name carrying a triggered yellow alarm (repeatable)")
	flag.Var(&o.disconnected, "disconnect-host", "host name to show as disconnected (repeatable)")
	flag.Parse()
	return o
}

type agentInfo struct {
	VM       string `json:"vm"`
	Hostname string `json:"hostname"`
	IP       string `json:"ip"`
	Host     string `json:"host"`
}

type ready struct {
	URL              string      `json:"url"`
	Host             string      `json:"host"`
	Port             int         `json:"port"`
	Username         string      `json:"username"`
	Cert             string      `json:"cert"`
	ThumbprintSHA256 string      `json:"thumbprint_sha256"`
	ThumbprintSHA1   string      `json:"thumbprint_sha1"`
	Datacenter       string      `json:"datacenter"`
	Cluster          string      `json:"cluster"`
	Hosts            []string    `json:"hosts"`
	Datastores       []string    `json:"datastores"`
	Agents           []agentInfo `json:"agents"`
	VirtualMachines  int         `json:"virtual_machines"`
	InventorySeconds float64     `json:"inventory_seconds"`
}

type inventory struct {
	c       *vim25.Client
	o       *options
	folders *object.DatacenterFolders
	cluster *object.ClusterComputeResource
	pool    *object.ResourcePool
	hosts   []*object.HostSystem
	dsDir   string
	out     *ready
}

func check(err error, what string) {
	if err != nil {
		log.Fatalf("vcsim: %s: %v", what, err)
	}
}

func wait(ctx context.Context, task *object.Task, err error) types.ManagedObjectReference {
	check(err, "task")
	info, err := task.WaitForResult(ctx)
	check(err, "task result")
	if ref, ok := info.Result.(types.ManagedObjectReference); ok {
		return ref
	}
	return types.ManagedObjectReference{}
}

func (inv *inventory) build(ctx context.Context) {
	root := object.NewRootFolder(inv.c)
	dc, err := root.CreateDatacenter(ctx, inv.o.datacenter)
	check(err, "datacenter")
	inv.folders, err = dc.Folders(ctx)
	check(err, "datacenter folders")
	inv.cluster, err = inv.folders.HostFolder.CreateCluster(ctx, inv.o.cluster, types.ClusterConfigSpecEx{})
	check(err, "cluster")
	for i := 1; i <= inv.o.hosts; i++ {
		name := fmt.Sprintf("%s%02d", inv.o.hostPrefix, i)
		task, err := inv.cluster.AddHost(ctx, types.HostConnectSpec{HostName: name}, true, nil, nil)
		ref := wait(ctx, task, err)
		inv.hosts = append(inv.hosts, object.NewHostSystem(inv.c, ref))
		inv.out.Hosts = append(inv.out.Hosts, name)
		h := simulator.Map.Get(ref).(*simulator.HostSystem)
		h.Summary.Hardware.NumCpuCores = int16(inv.o.hostCores)
		h.Summary.Hardware.MemorySize = int64(inv.o.hostMemGB) << 30
	}
	inv.pool, err = inv.cluster.ResourcePool(ctx)
	check(err, "resource pool")
	inv.datastore(ctx)
}

// datastore mounts one local datastore on every host; its size is fixed here so the
// checks do not depend on how full the machine running the simulator is.
func (inv *inventory) datastore(ctx context.Context) {
	dir, err := ioutil.TempDir("", "conveyor-vcsim-ds-")
	check(err, "datastore dir")
	inv.dsDir = dir
	for _, h := range inv.hosts {
		dss, err := h.ConfigManager().DatastoreSystem(ctx)
		check(err, "datastore system")
		_, err = dss.CreateLocalDatastore(ctx, "datastore1", dir)
		check(err, "datastore")
	}
	inv.out.Datastores = append(inv.out.Datastores, "datastore1")
	for _, e := range simulator.Map.All("Datastore") {
		ds := e.(*simulator.Datastore)
		capacity := int64(inv.o.datastoreCapGB * (1 << 30))
		free := int64(float64(capacity) * inv.o.datastoreFreePct / 100)
		ds.Summary.Capacity, ds.Summary.FreeSpace = capacity, free
		ds.Info.GetDatastoreInfo().FreeSpace = free
	}
}

func (inv *inventory) createVM(ctx context.Context, folder *object.Folder, name, hostname, ip string, host *object.HostSystem) types.ManagedObjectReference {
	nic := esx.EthernetCard
	devices, err := object.VirtualDeviceList{&nic}.ConfigSpec(types.VirtualDeviceConfigSpecOperationAdd)
	check(err, "vm devices")
	extra := []types.BaseOptionValue{
		&types.OptionValue{Key: "SET.guest.toolsRunningStatus", Value: string(types.VirtualMachineToolsRunningStatusGuestToolsRunning)},
	}
	if hostname != "" {
		extra = append(extra, &types.OptionValue{Key: "SET.guest.hostName", Value: hostname})
	}
	if ip != "" {
		extra = append(extra, &types.OptionValue{Key: "SET.guest.ipAddress", Value: ip})
	}
	spec := types.VirtualMachineConfigSpec{
		Name: name, GuestId: string(types.VirtualMachineGuestOsIdentifierOtherLinux64Guest),
		NumCPUs: 4, MemoryMB: 8192, DeviceChange: devices, ExtraConfig: extra,
		Files: &types.VirtualMachineFileInfo{VmPathName: "[datastore1]"},
	}
	task, err := folder.CreateVM(ctx, spec, inv.pool, host)
	ref := wait(ctx, task, err)
	vm := object.NewVirtualMachine(inv.c, ref)
	task, err = vm.PowerOn(ctx)
	wait(ctx, task, err)
	return ref
}

func (inv *inventory) machines(ctx context.Context) {
	agentFolder, err := inv.folders.VmFolder.CreateFolder(ctx, inv.o.agentFolder)
	check(err, "agent folder")
	fields, err := object.GetCustomFieldsManager(inv.c)
	check(err, "custom fields manager")
	def, err := fields.Add(ctx, inv.o.agentAttr, "VirtualMachine", nil, nil)
	check(err, "custom attribute")
	for k := 0; k < inv.o.agents; k++ {
		name := fmt.Sprintf("%s%d", inv.o.agentPrefix, inv.o.agentFrom+k)
		host := inv.hosts[k%len(inv.hosts)]
		a := agentInfo{VM: name, Hostname: name + inv.o.agentSuffix, IP: fmt.Sprintf("%s%d", inv.o.agentIPBase, inv.o.agentFrom+k), Host: inv.out.Hosts[k%len(inv.hosts)]}
		ref := inv.createVM(ctx, agentFolder, a.VM, a.Hostname, a.IP, host)
		check(fields.Set(ctx, ref, def.Key, inv.o.agentAttrValue), "set custom attribute")
		inv.out.Agents = append(inv.out.Agents, a)
	}
	for k := 0; k < inv.o.vms; k++ {
		name := fmt.Sprintf("vm-%04d", k+1)
		inv.createVM(ctx, inv.folders.VmFolder, name, name+".internal", "", inv.hosts[k%len(inv.hosts)])
	}
	inv.out.VirtualMachines = inv.o.agents + inv.o.vms
}

func findEntity(name string) *mo.ManagedEntity {
	for _, kind := range []string{"ClusterComputeResource", "HostSystem", "VirtualMachine", "Datastore", "Datacenter"} {
		for _, e := range simulator.Map.All(kind) {
			if me := e.Entity(); me.Name == name {
				return me
			}
		}
	}
	log.Fatalf("vcsim: no inventory object named %q", name)
	return nil
}

// faults sets what a real vCenter computes itself and the API cannot set.
func (inv *inventory) faults() {
	n := 0
	alarm := func(name string, status types.ManagedEntityStatus) {
		n++
		me := findEntity(name)
		me.TriggeredAlarmState = append(me.TriggeredAlarmState, types.AlarmState{
			Key: fmt.Sprintf("alarm-conveyor-%d.%s", n, me.Self.Value), Entity: me.Self,
			Alarm:         types.ManagedObjectReference{Type: "Alarm", Value: fmt.Sprintf("alarm-conveyor-%d", n)},
			OverallStatus: status, Time: time.Now(), Acknowledged: types.NewBool(false),
		})
		me.OverallStatus = status
	}
	for _, name := range inv.o.redAlarms {
		alarm(name, types.ManagedEntityStatusRed)
	}
	for _, name := range inv.o.yellowAlarms {
		alarm(name, types.ManagedEntityStatusYellow)
	}
	for _, name := range inv.o.disconnected {
		h, ok := simulator.Map.Get(findEntity(name).Self).(*simulator.HostSystem)
		if !ok {
			log.Fatalf("vcsim: %q is not a host", name)
		}
		h.Runtime.ConnectionState = types.HostSystemConnectionStateDisconnected
	}
	cluster := simulator.Map.Get(inv.cluster.Reference()).(*simulator.ClusterComputeResource)
	cluster.OverallStatus = types.ManagedEntityStatus(inv.o.clusterStatus)
	if s, ok := cluster.Summary.(*types.ClusterComputeResourceSummary); ok {
		s.OverallStatus = cluster.OverallStatus
	}
}

func main() {
	log.SetFlags(0)
	o := parseFlags()
	password := os.Getenv("VCSIM_PASSWORD")
	if password == "" {
		log.Fatal("vcsim: set the login password in the VCSIM_PASSWORD environment variable")
	}
	if o.hosts < 1 {
		log.Fatal("vcsim: --hosts must be at least 1")
	}
	addr, err := net.ResolveTCPAddr("tcp", o.listen)
	check(err, "--listen")
	if !addr.IP.IsLoopback() {
		log.Fatalf("vcsim: refusing to listen on %s: loopback addresses only", o.listen)
	}
	// Catch signals before anything is created, so a stop during start-up still
	// runs the deferred clean-up of temp files.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	started := time.Now()
	model := simulator.VPX()
	model.Datacenter, model.Cluster, model.Host, model.ClusterHost = 0, 0, 0, 0
	model.Machine, model.Datastore, model.Portgroup = 0, 0, 0
	check(model.Create(), "model")
	defer model.Remove()
	ctx := context.Background()
	c, err := vim25.NewClient(ctx, model.Service)
	check(err, "in-process client")
	out := &ready{Username: o.username, Datacenter: o.datacenter, Cluster: o.cluster}
	inv := &inventory{c: c, o: o, out: out}
	inv.build(ctx)
	defer os.RemoveAll(inv.dsDir)
	inv.machines(ctx)
	inv.faults()
	out.InventorySeconds = time.Since(started).Seconds()

	certPath, cert := loadOrCreateCert(o)
	model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	model.Service.Listen = &url.URL{Host: o.listen, User: url.UserPassword(o.username, password)}
	server := model.Service.NewServer()
	defer server.Close()
	if o.certFile == "" && o.certOut == "" {
		defer os.Remove(certPath)
	}
	leaf := cert.Certificate[0]
	s256, s1 := sha256.Sum256(leaf), sha1.Sum(leaf)
	out.ThumbprintSHA256, out.ThumbprintSHA1 = hex.EncodeToString(s256[:]), hex.EncodeToString(s1[:])
	out.Cert = certPath
	host, port, _ := net.SplitHostPort(server.Listener.Addr().String())
	out.Host = host
	fmt.Sscanf(port, "%d", &out.Port)
	out.URL = fmt.Sprintf("https://%s/sdk", net.JoinHostPort(host, port))
	line, err := json.Marshal(out)
	check(err, "ready line")
	fmt.Println(string(line))

	<-stop
}

func loadOrCreateCert(o *options) (string, tls.Certificate) {
	if o.certFile != "" {
		cert, err := tls.LoadX509KeyPair(o.certFile, o.keyFile)
		check(err, "--cert/--key")
		abs, _ := filepath.Abs(o.certFile)
		return abs, cert
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	check(err, "key")
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	check(err, "serial")
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "conveyor vcsim", Organization: []string{"conveyor"}},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(7 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
		DNSNames:    []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	check(err, "certificate")
	path := o.certOut
	if path == "" {
		f, err := ioutil.TempFile("", "conveyor-vcsim-*.pem")
		check(err, "certificate file")
		path = f.Name()
		f.Close()
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	check(ioutil.WriteFile(path, certPEM, 0o644), "write certificate")
	return path, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
