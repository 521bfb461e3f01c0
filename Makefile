# imgtool: the two commands a newcomer needs are `make demo` and `make test`; each installs the
# Debian packages it needs first. Run as root (loop devices, mounts, apt-get).
SHELL := /bin/bash
SWIFT ?= swift
# How long `make test` fuzzes the partition-table and boot-code parsers.
FUZZ_SECONDS ?= 60
OUT := out

# What each job needs from Debian. Build: the C libraries the Swift targets link (what a package
# depending on ImgKit needs too; zlib and zstd inflate qcow2 and VMDK clusters, libewf reads E01);
# static: what Scripts/build-libdevmapper.sh needs to build the static libdevmapper.a that only
# the CLI's static build (`make build`) links, and the static libbz2.a and libuuid.a it links too.
BUILD_PKGS := pkg-config libblkid-dev libext2fs-dev liblzma-dev libdevmapper-dev zlib1g-dev libzstd-dev libewf-dev libparted-dev libarchive-dev
STATIC_PKGS := dpkg-dev gcc make libbz2-dev uuid-dev
# install-grub at run time: grub-install and GRUB's i386-pc files; udevadm, which grub-probe asks
# where a partition starts; util-linux for setpriv; eatmydata, preloaded into grub-install in
# the --isolate VM (see Isolation.eatMyData).
RUN_PKGS := grub-pc-bin grub2-common udev e2fsprogs util-linux eatmydata
# Building test images (sfdisk, sgdisk, parted, mkfs/debugfs) and booting them (qemu, SeaBIOS);
# kpartx to check imgtool's partition maps against, dmsetup for the udev rules of the dm VM test.
TEST_PKGS := kpartx dmsetup linux-image-cloud-amd64 busybox-static cpio fdisk gdisk parted qemu-system-x86 python3 xorriso isolinux syslinux-common dosfstools mtools grub-efi-amd64-bin ovmf exfatprogs syslinux extlinux sleuthkit qemu-utils lvm2 cryptsetup-bin ewf-tools ntfs-3g udftools shim-signed grub-efi-amd64-signed
# The benchmarks' measuring tools: peak memory (time) and bytes read (strace); libguestfs's
# appliance (virt-filesystems), the reference for --isolate.
BENCH_PKGS := time strace libguestfs-tools
# Checking the package (`make test-deb`): lintian; debootstrap for a clean Debian root to
# install it into; man-db, bash-completion, zsh, fish and groff to try the page and completions;
# fdisk for the test image, python3 to read the apt sources.
DIST_PKGS := lintian debootstrap man-db bash-completion zsh fish groff fdisk python3
# ImgtoolTests renders the generated man page with groff -ww.
TEST_PKGS += groff-base
# FilesFATISOTests measures imgtool cat's peak memory with GNU time.
TEST_PKGS += time
# TestImages/make-linux-rootfs.sh resolves the cloud kernel's module dependencies with modprobe
# (linux-image-cloud-amd64 pulls kmod in; named here because the script calls it).
TEST_PKGS += kmod
# RepartDefinitionsTests compares create's placement with systemd-repart 252's own (systemd); the
# create tests read a tar input made with python3 and fill vfat with mtools (listed above).
TEST_PKGS += systemd

# `make install PREFIX=... DESTDIR=...`: the static executable, imgtool(1) and the completions.
PREFIX ?= /usr/local
DESTDIR ?=

.PHONY: all build demo test docs fuzz bench deps-build deps-static deps-run deps-test deps-bench clean install deb deps-dist test-deb

# Where deps-static puts the static libdevmapper.a for the CLI's static link.
DEPS := $(CURDIR)/.build/deps

all: build

# Installs the packages in $(1) that are missing; apt-get update only when something is.
define apt_install
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
		$$sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q --no-install-recommends $$missing; \
	fi
endef

deps-build:
	$(call apt_install,$(BUILD_PKGS))
# Debian ships no libdevmapper.a: build one from the installed libdevmapper-dev's lvm2 source
# (skipped when built).
deps-static: deps-build
	$(call apt_install,$(STATIC_PKGS))
	Scripts/build-libdevmapper.sh "$(DEPS)"
deps-run: deps-build
	$(call apt_install,$(RUN_PKGS))
deps-test: deps-run
	$(call apt_install,$(TEST_PKGS))

# Every swift command runs with a private TMPDIR (Scripts/with-private-tmp.sh): SwiftPM leaves
# empty TemporaryDirectory.* behind in /tmp otherwise; the test run also fails on a test's leftovers.

# A fully static executable: no dynamic loader, no relocations, so it starts in about a
# millisecond, like a C tool (linked dynamically it took 3 ms before doing anything). Stripped:
# 11 MB instead of 20, which --isolate copies into every VM. -L: the -ldevmapper that pkg-config
# gives finds deps-static's libdevmapper.a (a static link takes no .so). libarchive's and
# libparted's .pc files name only themselves (-larchive, -lparted), not what their static archives
# call: libarchive.a's bzip2 filter needs libbz2.a, libparted.a's GPT and msdos writers libuuid.a.
build: deps-static
	Scripts/with-private-tmp.sh $(SWIFT) build -c release --product imgtool -Xswiftc -static-executable \
		-Xlinker "-L$(DEPS)/lib" -Xlinker --strip-all -Xlinker -lbz2 -Xlinker -luuid

# Makes a sample image with TestImages' script, installs GRUB with imgtool, boots it under qemu
# and shows what GRUB printed on the serial console.
demo: deps-test build
	@mkdir -p $(OUT)
	TestImages/make-disk.sh $(OUT)/demo.img --label dos --fs ext4 --marker "Hello from GRUB, installed by imgtool"
	.build/release/imgtool install-grub $(OUT)/demo.img
	@echo "--- booting $(OUT)/demo.img under qemu (TCG); GRUB's serial console says:"
	TestImages/boot.sh $(OUT)/demo.img --timeout 60 --expect "Hello from GRUB, installed by imgtool"
	@echo "--- the classic recipe (device-mapper disk, kpartx maps) in a throwaway VM, since this kernel may lack device mapper:"
	TestImages/make-disk.sh $(OUT)/demo-dm.img --label gpt --fs ext4 --marker "Hello from GRUB, installed through device mapper"
	.build/release/imgtool install-grub --isolate --disk-name hda $(OUT)/demo-dm.img
	TestImages/boot.sh $(OUT)/demo-dm.img --timeout 60 --expect "Hello from GRUB, installed through device mapper"

# The whole suite, serially: kernel tests check that nothing of imgtool's is left after each run,
# which only holds if no other test is running at the same time.
test: deps-test
	TestImages/make-corpus.sh
	Scripts/with-private-tmp.sh $(SWIFT) build --build-tests
	IMGTOOL="$(CURDIR)/.build/debug/imgtool" Scripts/with-private-tmp.sh --check $(SWIFT) test --skip-build --no-parallel
	@# An embedder's package (Examples/installer), built as a user's package would be and run.
	SWIFT=$(SWIFT) Examples/test.sh
	$(MAKE) docs
	@# Every public symbol of the library targets has a doc comment (from the compiler's symbol graph).
	SWIFT=$(SWIFT) Scripts/check-doc-comments.py
	@# After the suite, asked of the kernel: no loop device over a test image, no mount of ours;
	@# and no scratch directory (Scratch, which holds the test images, is not under TMPDIR).
	@if losetup -l -n -O NAME,BACK-FILE | grep -F /tmp/imgtool-test-; then echo "loop devices left behind" >&2; exit 1; fi
	@if grep -E ' /run/imgtool/| /tmp/imgtool-test-' /proc/self/mounts; then echo "mounts left behind" >&2; exit 1; fi
	@if ls -d /tmp/imgtool-test-* 2>/dev/null; then echo "test scratch directories left behind" >&2; exit 1; fi
	@echo "after the suite: no loop device, mount or scratch directory of imgtool's left"
	Scripts/with-private-tmp.sh Fuzz/run.sh $(FUZZ_SECONDS)
	$(MAKE) test-deb

# ImgKit's DocC catalog (Sources/ImgKit/ImgKit.docc) and its symbols' doc comments, as HTML in
# out/docs; a broken link or reference fails it. make test runs it too.
docs: deps-build
	@mkdir -p $(OUT)
	Scripts/with-private-tmp.sh $(SWIFT) package --disable-sandbox generate-documentation --target ImgKit \
		--warnings-as-errors --output-path $(OUT)/docs

fuzz:
	Scripts/with-private-tmp.sh Fuzz/run.sh $(FUZZ_SECONDS)

# Ratios against what a user would otherwise run, measured in the same run.
deps-bench: deps-test
	$(call apt_install,$(BENCH_PKGS))

bench: deps-bench build
	IMGTOOL="$(CURDIR)/.build/release/imgtool" Tests/bench/install-grub.sh
	IMGTOOL="$(CURDIR)/.build/release/imgtool" Tests/bench/install-grub-uefi.sh
	IMGTOOL="$(CURDIR)/.build/release/imgtool" Tests/bench/inspect.sh
	IMGTOOL="$(CURDIR)/.build/release/imgtool" Tests/bench/isolate.sh
	IMGTOOL="$(CURDIR)/.build/release/imgtool" Tests/bench/create.sh

# The man page and the completions are written by the built executable from its own argument
# table (`imgtool __generate`), and the package's version is what it prints for --version: the
# one place the version is written is Imgtool.version in Sources/imgtool/Imgtool.swift.
install: build
	Scripts/install-tree.sh .build/release/imgtool "$(DESTDIR)" "$(PREFIX)"

# out/imgtool_<version>-1_<arch>.deb, with dpkg-deb (see Scripts/make-deb.sh).
deb: build
	Scripts/make-deb.sh .build/release/imgtool $(OUT)

deps-dist:
	$(call apt_install,$(DIST_PKGS))

# Installs the package with apt-get into a clean Debian root and runs the installed tool there;
# lintian, the man page and the three completions too (see Tests/package/deb-test.sh).
# make-deb.sh names the package it built (out/ may hold other versions).
test-deb: deps-dist build
	deb=$$(Scripts/make-deb.sh .build/release/imgtool $(OUT)) && \
		Scripts/with-private-tmp.sh --check Tests/package/deb-test.sh "$$deb"

clean:
	rm -rf .build $(OUT)
