import ImgFormats
import ImgSystem
import Logging

extension Verify {
    /// Why `boot` could not boot the image; `description` is the message the user reads.
    public enum BootError: Error, CustomStringConvertible, Sendable {
        /// The image cannot be given to qemu as it is (`bootFormat`).
        case refused(BootRefusal)
        /// qemu or its firmware could not run, or an `Interruption` stopped it.
        case qemu(QemuBoot.Error)

        public var description: String {
            switch self {
            case .refused(let refusal): refusal.description
            case .qemu(let error): error.description
            }
        }
    }

    /// What `boot` boots the image of `report` with when no firmware is asked for: each one it is
    /// laid out for. SeaBIOS and OVMF for a hybrid (boot code in sector 0 and a loader on the EFI
    /// system partition), OVMF when sector 0 has no boot code but there is an EFI system partition,
    /// else SeaBIOS. An ESP without a loader does not count: a BIOS install on a layout made for
    /// both leaves one empty.
    public static func bootFirmwares(for report: VerifyReport) -> [QemuBoot.Firmware] {
        let biosCode = report.bootCode.kind != .none
        if biosCode, report.efi?.loader != nil { return [.bios, .efi] }
        return !biosCode && report.efi != nil ? [.efi] : [.bios]
    }

    /// Boots `image`, whose static report is `report`, under qemu with `firmware`, or with each of
    /// `bootFirmwares(for:)`, one after the other, each waiting up to `timeout` seconds; the disk is
    /// presented as qemu's `bootFormat` with the partition table's sector size. Returns the report
    /// reconciled with the boots (`VerifyReport.reconciled(with:)`), which it records.
    public static func boot(_ report: VerifyReport, image: String, firmware: QemuBoot.Firmware? = nil, timeout: Double,
                            backingFiles: Bool = false, interruption: Interruption? = nil,
                            logger: Logger) throws(BootError) -> VerifyReport {
        let format: String
        do { format = try bootFormat(image: image, backingFiles: backingFiles) } catch { throw .refused(error) }
        let sectorSize = bootSectorSize(image: image)
        var boots: [VerifyReport.Boot] = []
        for firmware in firmware.map({ [$0] }) ?? bootFirmwares(for: report) {
            logger.debug("booting \(image) under \(firmware.displayName)", metadata: ["format": "\(format)", "sectorSize": "\(sectorSize)"])
            do {
                let observation = try QemuBoot.observe(image: image, format: format, sectorSize: sectorSize, timeout: timeout,
                                                       firmware: firmware, interruption: interruption)
                boots.append(.init(firmware: firmware, observation: observation))
            } catch { throw .qemu(error) }
        }
        return report.reconciled(with: boots)
    }
}
