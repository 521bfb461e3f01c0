import Glibc
import ImgFormats
import ImgSystem

/// An initramfs assembled from the host's installed files, for `IsolatedVM`: busybox (as /bin/sh
/// and the applets /init needs), host executables at their host paths with every shared library
/// `ldd` names (and the dynamic loader) at theirs, data directories copied as they are, kernel
/// modules with their dependencies in load order, and a generated /init.
///
/// Everything keeps its host path, so a command line that works on the host works inside. Host
/// executables win over busybox applets of the same path. Compressed modules (.ko.xz, .ko.gz,
/// .ko.zst) are stored decompressed, so that busybox's insmod loads them whether or not the guest
/// kernel can decompress modules (Debian 12's cloud kernel cannot: CONFIG_MODULE_DECOMPRESS is off).
///
/// The /init it generates is command-independent (the command arrives on a virtio-serial port), so
/// one archive serves every run with the same inputs; `GuestProtocol` describes the protocol.
package struct Initramfs: Sendable {
    /// The guest kernel's release: modules come from `modulesRoot`/`kernelRelease`.
    package var kernelRelease: String
    package var busybox = "/bin/busybox"
    /// Host executables to include with their libraries.
    package var executables: [String] = []
    /// Host directories to include recursively (regular files, directories, symlinks as symlinks).
    package var dataDirectories: [String] = []
    /// Single host files to include at their paths (e.g. one package's message catalogues).
    package var dataFiles: [String] = []
    /// Module names as modprobe takes them (`virtio_blk`, `dm_mod`, `vfat`); built-in ones are skipped.
    package var modules: [String] = []
    /// Modules loaded when the kernel has them and left out when it does not.
    package var optionalModules: [String] = []
    /// Modules /init loads only once the command has arrived (`GuestProtocol.diskModules`).
    package var deferredModules: [String] = []
    package var modulesRoot = "/lib/modules"

    package init(kernelRelease: String) {
        self.kernelRelease = kernelRelease
    }

    /// The assembled archive and what went into it.
    package struct Assembled: Sendable {
        /// The newc cpio, uncompressed.
        package let archive: [UInt8]
        /// Module files in load order, as /init loads them.
        package let moduleLoadOrder: [String]
        /// Directories of the included libraries: the guest's LD_LIBRARY_PATH (there is no ld.so.cache).
        package let libraryDirectories: [String]
        /// Every host file read and directory listed, for cache keys.
        package let sources: [String]
    }

    /// Busybox applets the generated /init and a shell command are likely to need; only those the
    /// host's busybox has get a symlink in /bin.
    package static let applets = [
        "sh", "ash", "mount", "umount", "insmod", "lsmod", "mkdir", "cat", "echo", "ln", "ls", "sleep", "usleep",
        "sync", "reboot", "poweroff", "true", "false", "test", "[", "dd", "head", "tail", "grep", "sed", "rm", "cp",
        "mv", "chmod", "env", "printf", "od", "hexdump", "xxd", "stat", "readlink", "find", "blockdev", "losetup",
        "dmesg", "uname", "timeout", "wc", "sort", "cmp", "sha256sum", "tr", "cut", "id", "kill",
    ]

    /// The guest directories on PATH after the included executables' own.
    static let basePath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    package func assemble() throws(IsolatedVM.Error) -> Assembled {
        var cpio = CpioWriter()
        var sources: [String] = []
        do {
            for dir in ["dev", "proc", "sys", "tmp", "run", "root", "var/tmp", "mnt"] {
                try cpio.addDirectory(dir, mode: dir.hasSuffix("tmp") ? 0o1777 : 0o755)
            }
        } catch { throw .initramfs(error.description) }

        // Executables and their libraries, each file once.
        var libraryDirectories: [String] = []
        var executableDirectories: [String] = []
        let programs = [busybox] + executables
        for program in programs {
            guard accessible(program, X_OK) else {
                throw program == busybox ? .busyboxMissing(program) : .executableMissing(program)
            }
            try add(file: program, at: program, to: &cpio, sources: &sources)
            let dir = Self.parent(program)
            if program != busybox, !executableDirectories.contains(dir) { executableDirectories.append(dir) }
            for library in try Self.sharedLibraries(of: program) where !cpio.contains(library) {
                try add(file: library, at: library, to: &cpio, sources: &sources, mode: 0o755)
                let dir = Self.parent(library)
                if !libraryDirectories.contains(dir) { libraryDirectories.append(dir) }
            }
        }
        for applet in try Self.busyboxApplets(busybox) where !cpio.contains("/bin/\(applet)") {
            do { try cpio.addSymlink("/bin/\(applet)", target: busybox) } catch { throw .initramfs(error.description) }
        }

        for directory in dataDirectories {
            try addTree(directory, to: &cpio, sources: &sources)
        }
        for file in dataFiles where !cpio.contains(file) {
            try add(file: file, at: file, to: &cpio, sources: &sources)
        }

        // Modules in load order, each once.
        var loadOrder: [String] = []
        var loadLines: [String] = [], deferredLoadLines: [String] = []
        for module in modules + optionalModules + deferredModules {
            let dependencies: [(String, [String])]
            do throws(IsolatedVM.Error) {
                dependencies = try Self.moduleDependencies(module, release: kernelRelease, root: modulesRoot)
            } catch {
                if case .moduleMissing = error, optionalModules.contains(module), !modules.contains(module) { continue }
                throw error
            }
            for (path, options) in dependencies where !loadOrder.contains(path) {
                loadOrder.append(path)
                let stored = try addModule(path, to: &cpio, sources: &sources)
                let line = (["insmod", stored] + options).map(GuestProtocol.shellQuote).joined(separator: " ")
                    + " || say \(GuestProtocol.shellQuote("insmod \(stored) failed"))"
                if deferredModules.contains(module) { deferredLoadLines.append(line) } else { loadLines.append(line) }
            }
        }

        let path = (executableDirectories + [Self.basePath]).joined(separator: ":")
        let script = GuestProtocol.initScript(path: path, libraryPath: libraryDirectories.joined(separator: ":"),
                                           moduleLoading: loadLines, deferredModuleLoading: deferredLoadLines, busybox: busybox)
        do { try cpio.addFile("init", data: Array(script.utf8), mode: 0o755) } catch { throw .initramfs(error.description) }
        return Assembled(archive: cpio.finish(), moduleLoadOrder: loadOrder, libraryDirectories: libraryDirectories,
                         sources: sources)
    }

    /// The bytes the guest unpacks from the archive, near enough to size its memory: executables,
    /// data files and, for a dynamically linked executable (a development build), its libraries,
    /// which can outweigh it many times (libarchive's libxml2 brings ICU's 31 MB of data). A
    /// static executable costs a stat; ldd runs only for the others.
    package func payloadBytes() -> UInt64 {
        var seen: Set<String> = []
        var total: UInt64 = 0
        func count(_ path: String) {
            guard seen.insert(path).inserted, let status = try? fileStatus(path) else { return }
            total += UInt64(status.st_size)
        }
        for program in [busybox] + executables {
            count(program)
            if Self.isDynamicELF(program), let libraries = try? Self.sharedLibraries(of: program) { libraries.forEach(count) }
        }
        dataFiles.forEach(count)
        return total
    }

    /// Whether `path` is an ELF file with a program interpreter (PT_INTERP): one ldd has libraries for.
    static func isDynamicELF(_ path: String) -> Bool {
        guard let source = try? FileByteSource(path: path), let header = try? source.read(at: 0, count: 64),
              header.starts(with: [0x7F, 0x45, 0x4C, 0x46]), header[4] == 2 else { return false }
        let offset = header.le64(0x20), size = Int(header.le16(0x36)), count = Int(header.le16(0x38))
        guard size >= 4, count <= 256, let table = try? source.read(at: offset, count: size * count) else { return false }
        return (0..<count).contains { table.le32($0 * size) == 3 }
    }

    // MARK: Files

    private func add(file source: String, at path: String, to cpio: inout CpioWriter, sources: inout [String],
                     mode: UInt32? = nil) throws(IsolatedVM.Error) {
        let st: stat
        do { st = try fileStatus(source) } catch { throw .system(error) }
        let data = try Self.readWholeFile(source)
        do { try cpio.addFile(path, data: data, mode: mode ?? UInt32(st.st_mode) & 0o7777) } catch { throw .initramfs(error.description) }
        sources.append(source)
    }

    /// Copies a directory tree (no device nodes, sockets or fifos; symlinks stay symlinks).
    private func addTree(_ root: String, to cpio: inout CpioWriter, sources: inout [String]) throws(IsolatedVM.Error) {
        let rootStatus: stat
        do { rootStatus = try fileStatus(root) } catch {
            throw .system(SystemError("stat (a directory)", on: root, errno: error.errno))
        }
        guard (rootStatus.st_mode & S_IFMT) == S_IFDIR else {
            throw .system(SystemError("stat (a directory)", on: root, errno: ENOTDIR))
        }
        var pending = [root]
        while let dir = pending.popLast() {
            let st: stat
            do { st = try fileStatus(dir) } catch { throw .system(error) }
            do { try cpio.addDirectory(dir, mode: UInt32(st.st_mode) & 0o7777) } catch { throw .initramfs(error.description) }
            sources.append(dir)  // its change time moves when an entry comes or goes
            let names: [String]
            do { names = try listDirectory(dir) } catch { throw .system(error) }
            for name in names.sorted() {  // sorted: the archive does not depend on readdir order
                let path = dir == "/" ? "/\(name)" : "\(dir)/\(name)"
                let entry: stat
                do { entry = try fileStatus(path, followingLinks: false) } catch { throw .system(error) }
                switch entry.st_mode & S_IFMT {
                case S_IFDIR: pending.append(path)
                case S_IFREG: try add(file: path, at: path, to: &cpio, sources: &sources)
                case S_IFLNK:
                    let target: String
                    do { target = try readSymbolicLink(path) } catch { throw .system(error) }
                    do { try cpio.addSymlink(path, target: target) } catch { throw .initramfs(error.description) }
                default: continue
                }
            }
        }
    }

    /// Stores a module, decompressed; returns its path in the archive.
    private func addModule(_ path: String, to cpio: inout CpioWriter, sources: inout [String]) throws(IsolatedVM.Error) -> String {
        let compressed = [".xz", ".gz", ".zst"].first { path.hasSuffix($0) }
        guard let compressed else {
            try add(file: path, at: path, to: &cpio, sources: &sources, mode: 0o644)
            return path
        }
        let stored = String(path.dropLast(compressed.count))
        let raw = try Self.readWholeFile(path)
        let data: [UInt8]
        switch compressed {
        case ".xz":
            do { data = try XZ.decompress(raw[...], limit: 256 << 20) } catch { throw .initramfs("\(path): \(error.description)") }
        default:
            let tool = compressed == ".gz" ? "gzip" : "zstd"
            do {
                let r = try Subprocess.run([tool, "-dc", path])
                guard r.succeeded else { throw IsolatedVM.Error.initramfs("\(tool) -dc \(path) failed: \(r.stderr)") }
                data = r.output
            } catch let error as Subprocess.Error {
                throw .initramfs("\(tool) is needed to decompress \(path): \(error.description) Install the Debian package \(tool).")
            } catch { throw error as! IsolatedVM.Error }
        }
        do { try cpio.addFile(stored, data: data, mode: 0o644) } catch { throw .initramfs(error.description) }
        sources.append(path)
        return stored
    }

    static func parent(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    /// A whole file, its failure as ours.
    static func readWholeFile(_ path: String) throws(IsolatedVM.Error) -> [UInt8] {
        do { return try readFile(path) } catch { throw .system(error) }
    }

    // MARK: Asking the host's tools

    /// The libraries `ldd` lists for `executable`, and its dynamic loader; none for a static one.
    static func sharedLibraries(of executable: String) throws(IsolatedVM.Error) -> [String] {
        let r: Subprocess.Result
        do { r = try Subprocess.run(["ldd", executable]) } catch { throw .toolMissing(tool: "ldd", package: "libc-bin") }
        // "not a dynamic executable" (exit 1) and "statically linked" both mean: nothing to add.
        if !r.succeeded || r.stdout.contains("statically linked") { return [] }
        var libraries: [String] = []
        for line in r.stdout.split(separator: "\n") {
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if let arrow = words.firstIndex(of: "=>") {
                guard arrow + 1 < words.endIndex else { continue }
                let target = String(words[arrow + 1])
                if target == "not" { throw .libraryMissing(executable: executable, library: String(words[0])) }
                if target.hasPrefix("/") { libraries.append(target) }  // "=> (0x...)": the vDSO
            } else if let first = words.first, first.hasPrefix("/") {
                libraries.append(String(first))  // the dynamic loader
            }
        }
        return libraries
    }

    static func busyboxApplets(_ busybox: String) throws(IsolatedVM.Error) -> [String] {
        let r: Subprocess.Result
        do { r = try Subprocess.run([busybox, "--list"]) } catch { throw .busyboxMissing(busybox) }
        let available = Set(r.stdout.split(separator: "\n").map(String.init))
        return applets.filter { available.contains($0) }
    }

    /// `modprobe -S RELEASE --show-depends MODULE`: module files with their options, in load order;
    /// built-in modules give nothing. Asks modules.dep under `root`/`release`, not the running kernel.
    static func moduleDependencies(_ module: String, release: String, root: String) throws(IsolatedVM.Error) -> [(String, [String])] {
        guard let modprobe = ["modprobe", "/usr/sbin/modprobe", "/sbin/modprobe"].lazy.compactMap(Subprocess.find).first else {
            throw .toolMissing(tool: "modprobe", package: "kmod")
        }
        var arguments = [modprobe, "-S", release, "--show-depends", module]
        if root != "/lib/modules" {
            // -d takes the directory that holds lib/modules.
            guard root.hasSuffix("/lib/modules") else { throw .initramfs("modules root \(root) must end in /lib/modules") }
            arguments.insert(contentsOf: ["-d", String(root.dropLast("/lib/modules".count))], at: 1)
        }
        let r: Subprocess.Result
        do { r = try Subprocess.run(arguments) } catch { throw .toolMissing(tool: "modprobe", package: "kmod") }
        guard r.succeeded else {
            throw .moduleMissing(module: module, release: release, detail: r.stderr.split(separator: "\n").first.map(String.init) ?? "")
        }
        var result: [(String, [String])] = []
        for line in r.stdout.split(separator: "\n") {
            let words = line.split(separator: " ").map(String.init)
            if words.first == "insmod", words.count >= 2 { result.append((words[1], Array(words.dropFirst(2)))) }
        }
        return result
    }
}
