import ImgFormats

/// What `Verify.run` decided, and what `imgtool verify --json` prints (`json`; it is also the
/// Codable form). Absent values are nil here and JSON null there.
public struct VerifyReport: Sendable, Equatable {
    /// The UEFI path: the EFI system partition and the loader firmware would start from it.
    public struct EFI: Sendable, Equatable {
        /// What GRUB's EFI image carries, when the loader is GRUB.
        public struct Grub: Sendable, Equatable {
            /// The modules built into the image.
            public let modules: [String]
            /// The prefix it looks for its modules and grub.cfg under.
            public let prefix: String?
            /// The embedded configuration, if any.
            public let config: String?

            /// Makes a value, for an embedder's tests.
            public init(modules: [String], prefix: String?, config: String?) {
                self.modules = modules
                self.prefix = prefix
                self.config = config
            }

            init(_ image: GrubEFIImage) { self.init(modules: image.modules, prefix: image.prefix, config: image.config) }
        }

        /// The EFI system partition's number.
        public let partition: Int
        /// \EFI\BOOT\BOOTX64.EFI when it is there.
        public let loader: String?
        /// The loader's PE machine.
        public let machine: PEImage.Machine?
        /// The loader's PE subsystem (an EFI application, to be started as a loader).
        public let subsystem: PEImage.Subsystem?
        /// What GRUB's EFI image carries; nil when the loader is not GRUB or its module list does not decode.
        public let grub: Grub?
        /// Whether UEFI boots it: nil when imgtool cannot tell.
        public let bootable: Bool?
        /// The UEFI path's problems.
        public let problems: [Finding]

        /// Makes a value, for an embedder's tests.
        public init(partition: Int, loader: String?, machine: PEImage.Machine?, subsystem: PEImage.Subsystem?,
                    grub: Grub?, bootable: Bool?, problems: [Finding]) {
            self.partition = partition
            self.loader = loader
            self.machine = machine
            self.subsystem = subsystem
            self.grub = grub
            self.bootable = bootable
            self.problems = problems
        }
    }

    /// GRUB 2's core.img, decoded from the disk.
    public struct Grub: Sendable, Equatable {
        /// Where core.img lies: its first sector and its length in sectors.
        public struct CoreImage: Sendable, Equatable {
            /// The LBA of core.img's first sector (diskboot.img), in 512-byte sectors.
            public let sector: UInt64
            /// core.img's length in 512-byte sectors, diskboot.img's included.
            public let sectors: UInt64

            /// Makes a value, for an embedder's tests.
            public init(sector: UInt64, sectors: UInt64) {
                self.sector = sector
                self.sectors = sectors
            }
        }

        /// Where core.img lies on the disk.
        public let coreImage: CoreImage
        /// The modules built into core.img.
        public let modules: [String]
        /// Where GRUB looks for its modules and grub.cfg: "(,msdos1)/boot/grub".
        public let prefix: String?
        /// The embedded configuration, if any.
        public let config: String?

        /// Makes a value, for an embedder's tests.
        public init(coreImage: CoreImage, modules: [String], prefix: String?, config: String?) {
            self.coreImage = coreImage
            self.modules = modules
            self.prefix = prefix
            self.config = config
        }

        init(_ core: GrubCoreImage) {
            self.init(coreImage: .init(sector: core.firstSector, sectors: core.sectors), modules: core.modules,
                      prefix: core.prefix, config: core.config)
        }
    }

    /// One boot under qemu (`Verify.boot`): the firmware it booted with and what the screen showed.
    public struct Boot: Sendable, Equatable {
        /// What the VM booted with.
        public let firmware: QemuBoot.Firmware
        /// What the screen showed.
        public let observation: BootObservation

        /// Makes a value, for an embedder's tests.
        public init(firmware: QemuBoot.Firmware, observation: BootObservation) {
            self.firmware = firmware
            self.observation = observation
        }
    }

    /// The path as given.
    public let image: String
    /// true when the image boots with BIOS or with UEFI, false when neither, nil when imgtool
    /// cannot tell. After boots with several firmwares (a hybrid's), true only when each of them
    /// reached the boot loader (`reconciled(with:)`).
    public let bootable: Bool?
    /// The BIOS path alone: sector 0's boot code and what it loads.
    public let biosBootable: Bool?
    /// What the boot code in sector 0 is.
    public let bootCode: BootCode
    /// GRUB 2's core.img, when sector 0 holds GRUB 2's boot.img and core.img decodes.
    public let grub: Grub?
    /// The BIOS path's problems.
    public let problems: [Finding]
    /// nil when the image has no EFI system partition.
    public let efi: EFI?
    /// The boots under qemu the verdict was reconciled with, in the order they ran; empty without one.
    public let boots: [Boot]

    /// Makes a value, for an embedder's tests.
    public init(image: String, bootable: Bool?, biosBootable: Bool?, bootCode: BootCode, grub: Grub?,
                problems: [Finding], efi: EFI?, boots: [Boot] = []) {
        self.image = image
        self.bootable = bootable
        self.biosBootable = biosBootable
        self.bootCode = bootCode
        self.grub = grub
        self.problems = problems
        self.efi = efi
        self.boots = boots
    }

    /// imgtool verify's exit code: 0 bootable, 1 not bootable, 2 unknown.
    public var exitCode: Int32 { bootable.map { $0 ? 0 : 1 } ?? 2 }
}
