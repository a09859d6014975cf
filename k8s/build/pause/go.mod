// The pod sandbox's process (containerd's sandbox image runs it): written here, no
// dependencies. It sleeps until SIGINT/SIGTERM and reaps children it inherits.
module cnpg-ext-harness/k8s/build/pause

go 1.26.0
