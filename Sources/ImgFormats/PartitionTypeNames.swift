/// Human names for the partition types one meets in practice, worded as fdisk words them so a
/// report reads like the tools people know. Unknown types have no name rather than a guess.
public enum PartitionTypeNames {
    /// fdisk's name for an MBR type byte ("Linux" for 0x83), or nil for a type not in the list.
    public static func name(mbrType: UInt8) -> String? { mbr[mbrType] }
    /// fdisk's name for a GPT type GUID ("EFI System"), or nil for a type not in the list.
    public static func name(gptType: GUID) -> String? { gpt[gptType.description] }
    /// disklabel's name for a BSD partition's filesystem type (FSTYPENAMES, as mmls prints them).
    public static func name(bsdType: UInt8) -> String? { bsd[bsdType] }
    /// The BSD filesystem type `name` names.
    public static func bsdType(named name: String) -> UInt8? { bsd.first { $0.value == name }?.key }

    static let bsd: [UInt8: String] = [
        1: "swap", 2: "Version 6", 3: "Version 7", 4: "System V", 5: "4.1BSD", 6: "Eighth Edition", 7: "4.2BSD",
        8: "MSDOS", 9: "4.4LFS", 10: "unknown", 11: "HPFS", 12: "ISO9660", 13: "boot", 14: "vinum", 15: "HFS",
        16: "FILECORE", 17: "ext2fs", 18: "NTFS", 19: "RAID", 20: "ccd", 21: "jfs2", 22: "Apple UFS",
    ]

    static let mbr: [UInt8: String] = [
        0x00: "Empty", 0x01: "FAT12", 0x04: "FAT16 <32M", 0x05: "Extended", 0x06: "FAT16",
        0x07: "HPFS/NTFS/exFAT", 0x0B: "W95 FAT32", 0x0C: "W95 FAT32 (LBA)", 0x0E: "W95 FAT16 (LBA)",
        0x0F: "W95 Ext'd (LBA)", 0x11: "Hidden FAT12", 0x17: "Hidden HPFS/NTFS", 0x1B: "Hidden W95 FAT32",
        0x27: "Hidden NTFS WinRE", 0x42: "SFS", 0x82: "Linux swap / Solaris", 0x83: "Linux",
        0x85: "Linux extended", 0x8E: "Linux LVM", 0xA5: "FreeBSD", 0xA6: "OpenBSD", 0xA8: "Darwin UFS",
        0xA9: "NetBSD", 0xAF: "HFS / HFS+", 0xBE: "Solaris boot", 0xBF: "Solaris", 0xDA: "Non-FS data",
        0xEE: "GPT", 0xEF: "EFI (FAT-12/16/32)", 0xFB: "VMware VMFS", 0xFD: "Linux raid autodetect",
    ]

    static let gpt: [String: String] = [
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B": "EFI System",
        "024DEE41-33E7-11D3-9D69-0008C781F39F": "MBR partition scheme",
        "21686148-6449-6E6F-744E-656564454649": "BIOS boot",
        "E3C9E316-0B5C-4DB8-817D-F92DF00215AE": "Microsoft reserved",
        "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7": "Microsoft basic data",
        "DE94BBA4-06D1-4D40-A16A-BFD50179D6AC": "Windows recovery environment",
        "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F": "Linux swap",
        "0FC63DAF-8483-4772-8E79-3D69D8477DE4": "Linux filesystem",
        "44479540-F297-41B2-9AF7-D131D5F0458A": "Linux root (x86)",
        "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709": "Linux root (x86-64)",
        "B921B045-1DF0-41C3-AF44-4C6F280D3FAE": "Linux root (ARM-64)",
        "BC13C2FF-59E6-4262-A352-B275FD6F7172": "Linux extended boot",
        "933AC7E1-2EB4-4F13-B844-0E14E2AEF915": "Linux home",
        "A19D880F-05FC-4D3B-A006-743F0F84911E": "Linux RAID",
        "E6D6D379-F507-44C2-A23C-238F2A3DF928": "Linux LVM",
        "CA7D7CCB-63ED-4C53-861C-1742536059CC": "Linux LUKS",
        "516E7CB4-6ECF-11D6-8FF8-00022D09712B": "FreeBSD data",
        "83BD6B9D-7F41-11DC-BE0B-001560B84F0F": "FreeBSD boot",
        "48465300-0000-11AA-AA11-00306543ECAC": "Apple HFS/HFS+",
        "7C3457EF-0000-11AA-AA11-00306543ECAC": "Apple APFS",
        "6A898CC3-1DD2-11B2-99A6-080020736631": "Solaris /usr & Apple ZFS",
    ]
}
