/// The screen a serial console draws: OVMF's text console (and GRUB's EFI console through it) paints
/// with ANSI cursor addressing, not line by line, so the bytes are replayed on a grid to get rows
/// comparable with the VGA text buffer's.
extension BootScreen {
    /// Large enough for OVMF's 100x31 serial mode; rows beyond are scrolled off.
    static let terminalSize = (columns: 160, rows: 50)

    /// Replays `bytes` (a serial log) on a blank grid and returns its rows, trailing spaces trimmed.
    /// Handles what firmware and GRUB send: printable bytes (as code page 437, like the VGA ROM),
    /// CR, LF, BS, and CSI sequences for cursor position (H, f), cursor moves (A-D), erase (J, K);
    /// colours (m) and anything else are skipped.
    public static func renderTerminal(_ bytes: [UInt8]) -> [String] {
        let (columns, rows) = terminalSize
        var grid = [[Unicode.Scalar]](repeating: [Unicode.Scalar](repeating: " ", count: columns), count: rows)
        var row = 0, column = 0
        func newline() {
            row += 1
            if row == rows {
                grid.removeFirst()
                grid.append([Unicode.Scalar](repeating: " ", count: columns))
                row = rows - 1
            }
        }
        var i = 0
        while i < bytes.count {
            let byte = bytes[i]
            i += 1
            switch byte {
            case 0x1B:
                guard i < bytes.count else { break }
                guard bytes[i] == UInt8(ascii: "[") else { i += 1; break }  // ESC c, ESC 7, ...: one byte
                i += 1
                var parameters: [Int] = []
                var current: Int?
                while i < bytes.count, !(0x40...0x7E).contains(bytes[i]) {
                    let b = bytes[i]
                    if (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b) {
                        current = min((current ?? 0) * 10 + Int(b - UInt8(ascii: "0")), 10_000)
                    } else if b == UInt8(ascii: ";") {
                        parameters.append(current ?? 0)
                        current = nil
                    }
                    i += 1
                }
                parameters.append(current ?? 0)
                guard i < bytes.count else { break }
                let final = bytes[i]
                i += 1
                let first = max(parameters[0], 1)
                switch final {
                case UInt8(ascii: "H"), UInt8(ascii: "f"):
                    row = min(max(parameters[0], 1), rows) - 1
                    column = min(max(parameters.count > 1 ? parameters[1] : 1, 1), columns) - 1
                case UInt8(ascii: "A"): row = max(row - first, 0)
                case UInt8(ascii: "B"): row = min(row + first, rows - 1)
                case UInt8(ascii: "C"): column = min(column + first, columns - 1)
                case UInt8(ascii: "D"): column = max(column - first, 0)
                case UInt8(ascii: "J"):
                    if parameters[0] == 2 {
                        grid = [[Unicode.Scalar]](repeating: [Unicode.Scalar](repeating: " ", count: columns), count: rows)
                    } else if parameters[0] == 0 {
                        for c in column..<columns { grid[row][c] = " " }
                        for r in (row + 1)..<rows { grid[r] = [Unicode.Scalar](repeating: " ", count: columns) }
                    }
                case UInt8(ascii: "K"):
                    if parameters[0] == 0 { for c in column..<columns { grid[row][c] = " " } }
                    if parameters[0] == 2 { grid[row] = [Unicode.Scalar](repeating: " ", count: columns) }
                default: break
                }
            case 0x0D: column = 0
            case 0x0A: newline()
            case 0x08: column = max(column - 1, 0)
            case 0x00..<0x20, 0x7F: break
            default:
                if column == columns { column = 0; newline() }
                grid[row][column] = cp437[Int(byte)]
                column += 1
            }
        }
        return grid.map { line in
            var s = String.UnicodeScalarView()
            s.append(contentsOf: line)
            return trimTrailing(String(s))
        }
    }
}
