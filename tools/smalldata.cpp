// smalldata: the command-line tool of smalldata.hpp (docs/tools.md).
//
//   smalldata recover FILE   make the output of a run that was killed readable again
//   smalldata check FILE     verify a final or serial file and print what it holds
//   smalldata flatten [--force] FILE OUT   copy FILE into one self-contained file OUT
//
// It uses only the header's HDF5 code (section 17, Recovery, the join's build_final_file,
// and section 18's flatten_file); it runs as a plain process and does not initialise MPI.
#define SMALLDATA_IMPLEMENTATION
#include "../smalldata.hpp"

#include <dirent.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <set>

namespace sd = smalldata;
namespace dt = smalldata::detail;

namespace {

const char* const usage_text =
    "usage: smalldata recover FILE   make the output of a killed run readable: recover its part files and\n"
    "                                rebuild FILE from them, or recover FILE itself if it is a serial file\n"
    "       smalldata check FILE     verify a final (or serial) file and its parts; exit 0 if sound, 1 if not\n"
    "       smalldata flatten [--force] FILE OUT\n"
    "                                copy a final (or serial) file into OUT, one self-contained file of\n"
    "                                ordinary datasets that reads the same; --force replaces an existing OUT\n";

std::string dir_of(const std::string& path) {
    const std::size_t slash = path.rfind('/');
    return slash == std::string::npos ? std::string(".") : (slash == 0 ? std::string("/") : path.substr(0, slash));
}
std::string join_path(const std::string& dir, const std::string& name) {
    if (!name.empty() && name[0] == '/') return name;
    return dir == "." ? name : dir + "/" + name;
}
std::vector<std::string> list_dir(const std::string& dir) {
    std::vector<std::string> out;
    DIR* d = ::opendir(dir.c_str());
    if (!d) return out;
    while (const dirent* e = ::readdir(d)) out.emplace_back(e->d_name);
    ::closedir(d);
    return out;
}
bool all_hex(const std::string& s) {
    for (char c : s)
        if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
    return !s.empty();
}
std::string hex16(std::uint64_t v) {
    char b[17];
    std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(v));
    return b;
}

// The root attributes a part file carries (section 16).
struct PartTags {
    bool ok = false;   // all four read
    std::uint64_t run = 0, part = 0, parts = 0;
    std::string final_name;
    std::size_t datasets = 0;
    bool time_order = false;  // a part of an Options::time_order run (smalldata_time_order)
};
// Reads them without modifying the file: plainly, or as an SWMR reader when a crash left
// the status flags set. Throws (naming the file) when the file does not open either way.
// `missing`: bytes the file lacks of the end its superblock gives (h5_open_recovering).
dt::H5Id open_any(const std::string& path, std::uint64_t* missing = nullptr) {
    dt::H5Quiet q;
    if (missing) *missing = 0;
    dt::H5Id f(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
    if (!f.valid()) f = dt::H5Id(H5Fopen(path.c_str(), H5F_ACC_RDONLY | H5F_ACC_SWMR_READ, H5P_DEFAULT), H5Fclose);
    if (!f.valid()) {
        // Last resort: clear the flags (what recovery does anyway).
        f = dt::h5_open_recovering(path, false, nullptr, missing);
    }
    return f;
}
PartTags read_tags(const std::string& path) {
    dt::H5Quiet q;
    std::uint64_t missing = 0;
    const dt::H5Id f = open_any(path, &missing);
    PartTags t;
    t.ok = dt::h5_get_attr_u64(f.get(), dt::attr_run, t.run) && dt::h5_get_attr_u64(f.get(), dt::attr_part, t.part) &&
           dt::h5_get_attr_u64(f.get(), dt::attr_parts, t.parts) &&
           dt::h5_get_attr_string(f.get(), dt::attr_final, t.final_name);
    std::uint64_t ordered = 0;
    t.time_order = dt::h5_get_attr_u64(f.get(), dt::attr_time_order, ordered);
    H5Eclear2(H5E_DEFAULT);
    try {
        t.datasets = dt::list_datasets(f.get(), path).size();
    } catch (const sd::Error& e) {
        if (!missing) throw;
        dt::throw_error(e.code(), dt::short_file_text(path, missing) + ": " + dt::bare_text(e.what()));
    }
    return t;
}

// What recovery did to a file, for its line: " (crashed: status flags cleared, ...)", or
// nothing when it found the file whole. `gap`: more space before the parenthesis.
std::string recovered_note(const dt::Recovered& r, const char* gap) {
    std::string note;
    auto add = [&](const std::string& what) { note += (note.empty() ? std::string(gap) + " (" : ", ") + what; };
    if (r.cleared) add("crashed: status flags cleared");
    if (r.missing_bytes)
        add(std::to_string(r.missing_bytes) + " bytes short of its superblock's end (killed inside a flush): extended");
    if (r.cut_rows) add(std::to_string(r.cut_rows) + " incomplete rows cut");
    return note.empty() ? note : note + ")";
}

// Names in FILE's directory that look like its parts: <stem>_part<k>.h5, and <...>.tmp.
struct PartNames {
    std::map<int, std::string> parts;   // k -> path
    std::map<int, std::string> tmps;    // k -> path of <part>.tmp
    std::map<int, std::string> ordered; // k -> path of <part>.ordered (Options::time_order)
};
PartNames find_part_names(const std::string& file) {
    PartNames out;
    const std::string dir = dir_of(file);
    const std::string p0 = dt::base_name(dt::part_path_of(file, 0));  // <stem>_part0.h5
    const std::string prefix = p0.substr(0, p0.size() - 4);           // <stem>_part
    for (const std::string& n : list_dir(dir)) {
        if (n.compare(0, prefix.size(), prefix) != 0) continue;
        std::string rest = n.substr(prefix.size());
        bool tmp = false, ordered = false;
        if (rest.size() > 4 && rest.compare(rest.size() - 4, 4, ".tmp") == 0) {
            tmp = true;
            rest.resize(rest.size() - 4);
        } else if (rest.size() > 8 && rest.compare(rest.size() - 8, 8, ".ordered") == 0) {
            ordered = true;
            rest.resize(rest.size() - 8);
        }
        if (rest.size() < 4 || rest.compare(rest.size() - 3, 3, ".h5") != 0) continue;
        const std::string digits = rest.substr(0, rest.size() - 3);
        if (digits.empty() || digits.size() > 6 || digits.find_first_not_of("0123456789") != std::string::npos) continue;
        if (digits.size() > 1 && digits[0] == '0') continue;
        const int k = std::stoi(digits);
        if (dt::base_name(dt::part_path_of(file, k)) + (tmp ? ".tmp" : ordered ? ".ordered" : "") != n) continue;
        (tmp ? out.tmps : ordered ? out.ordered : out.parts)[k] = join_path(dir, n);
    }
    return out;
}

void remove_file(const std::string& path) {
    if (::unlink(path.c_str()) == 0)
        std::printf("  removed leftover %s\n", path.c_str());
    else
        dt::throw_error(sd::Errc::hdf5, "cannot remove '" + path + "': " + std::strerror(errno), errno);
}

// Final-file leftovers of a join that was killed: FILE.<16 hex digits>.tmp.
void remove_final_leftovers(const std::string& file) {
    const std::string dir = dir_of(file), base = dt::base_name(file);
    for (const std::string& n : list_dir(dir)) {
        if (n.size() != base.size() + 1 + 16 + 4 || n.compare(0, base.size() + 1, base + ".") != 0) continue;
        if (n.compare(n.size() - 4, 4, ".tmp") != 0 || !all_hex(n.substr(base.size() + 1, 16))) continue;
        remove_file(join_path(dir, n));
    }
}

// Whether FILE's `timestamp` never decreases.
bool timestamps_in_order(const std::string& file) {
    dt::H5Quiet q;
    dt::H5Id f(H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
    dt::H5Id d(f.valid() ? H5Dopen2(f.get(), "timestamp", H5P_DEFAULT) : H5I_INVALID_HID, H5Dclose);
    if (!d.valid()) return true;  // nothing to be out of order
    dt::H5Id space(H5Dget_space(d.get()), H5Sclose);
    hsize_t n = 0;
    if (!space.valid() || H5Sget_simple_extent_dims(space.get(), &n, nullptr) != 1) return true;
    bool ordered = true;
    std::int64_t last = INT64_MIN;
    dt::for_each_i64(d.get(), n, "'timestamp' in '" + file + "'", [&](std::uint64_t, std::int64_t t) {
        ordered = t >= last;
        last = t;
        return ordered;
    });
    return ordered;
}

int recover_parallel(const std::string& file, const PartNames& names, const std::map<int, PartTags>& tags,
                     const std::map<int, std::string>& blank) {
    // Every part of FILE must agree on the run and the number of parts.
    std::uint64_t run = 0, parts = 0;
    int first = -1;
    for (const auto& kv : tags) {
        const PartTags& t = kv.second;
        const std::string& path = names.parts.at(kv.first);
        if (t.part != static_cast<std::uint64_t>(kv.first))
            dt::throw_error(sd::Errc::join, "'" + path + "' says it is part " + std::to_string(t.part));
        if (first < 0) {
            first = kv.first;
            run = t.run;
            parts = t.parts;
        } else if (t.run != run || t.parts != parts) {
            dt::throw_error(sd::Errc::join, "'" + path + "' is from another run than '" + names.parts.at(first) +
                                                "' (run " + hex16(t.run) + " of " + std::to_string(t.parts) +
                                                " parts, not " + hex16(run) + " of " + std::to_string(parts) + ")");
        }
    }
    if (parts == 0 || parts > 1000000) dt::throw_error(sd::Errc::join, "'" + names.parts.at(first) + "' has no valid part count");
    for (const auto& kv : names.parts)
        if (static_cast<std::uint64_t>(kv.first) >= parts)
            dt::throw_error(sd::Errc::join, "'" + kv.second + "' is beyond the run's " + std::to_string(parts) + " parts");
    std::printf("%s: run %s, %" PRIu64 " part file%s\n", file.c_str(), hex16(run).c_str(), parts, parts == 1 ? "" : "s");
    std::vector<unsigned char> all;
    std::vector<int> lens;
    std::uint64_t total = 0;
    for (std::uint64_t k = 0; k < parts; ++k) {
        const int ki = static_cast<int>(k);
        const std::string path = dt::part_path_of(file, ki);
        std::vector<unsigned char> desc;
        auto it = names.parts.find(ki);
        if (blank.count(ki)) {
            // Killed before its first checkpoint: give it the run's attributes, so that it
            // is an empty part of this run (for `check`, and for a rerun, which replaces it).
            {
                dt::H5Id f = dt::h5_open_recovering(path, true);
                dt::H5Quiet q;
                dt::h5_set_attr_u64(f.get(), dt::attr_run, run);
                dt::h5_set_attr_u64(f.get(), dt::attr_part, k);
                dt::h5_set_attr_u64(f.get(), dt::attr_parts, parts);
                dt::h5_set_attr_string(f.get(), dt::attr_final, dt::base_name(file));
                if (f.close() < 0) dt::throw_h5("closing '" + path + "'");
            }
            dt::append_pod(desc, std::uint64_t(0));
            dt::append_pod(desc, std::uint32_t(0));
            std::printf("  part %d  %-28s        0 events  (killed before its first checkpoint: no run attributes "
                        "on disk; given them now)\n", ki, dt::base_name(path).c_str());
        } else if (it == names.parts.end()) {
            dt::append_pod(desc, std::uint64_t(0));
            dt::append_pod(desc, std::uint32_t(0));
            std::printf("  part %d  %-28s missing: 0 events%s\n", ki, dt::base_name(path).c_str(),
                        names.tmps.count(ki) ? " (killed while it was created)" : "");
        } else {
            const dt::Recovered r = dt::recover_file(path);
            desc = r.description;
            total += r.events;
            std::printf("  part %d  %-28s %12" PRIu64 " events%s\n", ki, dt::base_name(path).c_str(), r.events,
                        recovered_note(r, " ").c_str());
        }
        lens.push_back(static_cast<int>(desc.size()));
        all.insert(all.end(), desc.begin(), desc.end());
    }
    // A final file of this run keeps its summary and attributes (done() wrote them): the
    // final file itself, or the join's own FILE.<run>.tmp when the run was killed while
    // done() copied it into one file (Options::self_contained: the virtual file is complete
    // under that name, closed with its run token last, before the copy begins). Otherwise
    // they are lost: they lived only in memory until the join.
    std::vector<dt::SummaryItem> summary;
    std::vector<dt::AttributeItem> attributes;
    std::string kept_from;
    for (const std::string& candidate : {file, file + "." + hex16(run) + ".tmp"}) {
        if (!kept_from.empty() || !dt::path_exists(candidate)) continue;
        dt::H5Quiet q;
        dt::H5Id old(H5Fopen(candidate.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
        std::uint64_t tok = 0;
        if (old.valid() && dt::h5_get_attr_u64(old.get(), dt::attr_run, tok) && tok == run) {
            summary = dt::read_summary(old.get(), dt::list_datasets(old.get(), candidate));
            attributes = dt::read_attributes(old.get());
            kept_from = candidate;
        }
        H5Eclear2(H5E_DEFAULT);
    }
    const bool kept = !kept_from.empty();
    for (const auto& kv : names.tmps) remove_file(kv.second);
    remove_final_leftovers(file);
    dt::FinalSpec spec;
    spec.filename = file;
    spec.parts = static_cast<int>(parts);
    spec.run_token = run;
    spec.summary = &summary;
    spec.builder = "smalldata recover";
    spec.attributes = &attributes;
    try {
        dt::build_final_file(spec, all, lens);
    } catch (const sd::Error& e) {
        // A kept summary or attribute that no longer fits (a part, and with it a field, is
        // gone): thrown once the file is in place, without it.
        if (e.code() != sd::Errc::name) throw;
        std::printf("  warning: %s\n", e.what());
    }
    if (kept && (!summary.empty() || !attributes.empty()))
        std::printf("  total %" PRIu64 " events; rebuilt %s (%zu summary datasets and %zu attributes kept from %s)\n",
                    total, file.c_str(), summary.size(), attributes.size(),
                    kept_from == file ? "it" : ("the join's complete " + dt::base_name(kept_from)).c_str());
    else
        std::printf("  total %" PRIu64 " events; rebuilt %s (no summary datasets: done() did not write them)\n", total,
                    file.c_str());
    bool time_order = false;
    for (const auto& kv : tags) time_order = time_order || kv.second.time_order;
    if (time_order && !timestamps_in_order(file))
        std::printf("  warning: the run asked for time order (Options::time_order), but it ended before done() had "
                    "ordered its events: %s holds them in the order the servers received them; sort by 'timestamp' "
                    "when reading\n", file.c_str());
    return 0;
}

int recover_serial(const std::string& file) {
    const std::string tmp = file + ".tmp";
    if (!dt::path_exists(file)) {
        if (dt::path_exists(tmp)) {
            std::printf("%s: only %s exists: the run was killed while it created its file; 0 events\n", file.c_str(),
                        tmp.c_str());
            remove_file(tmp);
            return 0;
        }
        dt::throw_error(sd::Errc::usage, "'" + file + "' does not exist, and neither do part files of it");
    }
    const dt::Recovered r = dt::recover_file(file);
    std::printf("%s: serial file, %" PRIu64 " events%s\n", file.c_str(), r.events, recovered_note(r, "").c_str());
    if (dt::path_exists(tmp)) remove_file(tmp);
    return 0;
}

// FILE is a serial run's file: it opens (a crashed one too) and carries no run token (a
// parallel run's final file and parts always do). A serial run replaces the final file of
// an earlier parallel run of the same name but leaves that run's parts; those are not
// FILE's. A file that does not open at all is not judged here (false).
bool is_serial_file(const std::string& file) {
    if (!dt::path_exists(file)) return false;
    try {
        dt::H5Quiet q;
        const dt::H5Id f = open_any(file);
        if (!f.valid()) return false;
        std::uint64_t run = 0;
        const bool tagged = dt::h5_get_attr_u64(f.get(), dt::attr_run, run);
        H5Eclear2(H5E_DEFAULT);
        return !tagged;
    } catch (const sd::Error&) {
        return false;
    }
}

// Reads u64 attributes of a file's root, the file opened once and not modified; false if
// it does not open or lacks any of them.
bool read_root_u64(const std::string& file, std::initializer_list<std::pair<const char*, std::uint64_t*>> attrs) {
    try {
        dt::H5Quiet q;
        const dt::H5Id f = open_any(file);
        bool all = f.valid();
        for (const auto& a : attrs) all = all && dt::h5_get_attr_u64(f.get(), a.first, *a.second);
        H5Eclear2(H5E_DEFAULT);
        return all;
    } catch (const sd::Error&) {
        return false;
    }
}

// The run a self-contained file was flattened from (its smalldata_flat_run attribute);
// false for any other file.
bool flat_run_of(const std::string& file, std::uint64_t& run) { return read_root_u64(file, {{dt::attr_flat_run, &run}}); }

// A time-ordered run killed in done() (section 19): its parts' <part>.ordered files, each
// tagged with its run's token when it is made. If a part of that run already carries the
// attribute smalldata_time_order (its .ordered file took its name), or is missing beside
// one of the run's .ordered files (removed by the switch), the switch had begun and every
// .ordered file of that run is complete: each takes its part's name. Otherwise the old
// parts are whole and the .ordered files (perhaps incomplete) are removed. Only the run's
// own parts count: a part left by an earlier time-ordered run with more servers (beside a
// rerun with fewer) says nothing about this one. Returns the run whose switch it finished
// (0: none): the latest run there, whose done() was running.
std::uint64_t settle_time_order(const std::string& file) {
    const PartNames names = find_part_names(file);
    std::map<int, std::string> ordered;
    for (const auto& kv : names.ordered)
        if (!dt::path_is_dir(kv.second)) ordered.insert(kv);
    if (ordered.empty()) return 0;
    std::map<int, std::uint64_t> run_of;  // each .ordered file's run (none: killed as it was made)
    for (const auto& kv : ordered) {
        std::uint64_t r = 0;
        if (read_root_u64(kv.second, {{dt::attr_run, &r}})) run_of[kv.first] = r;
    }
    std::set<std::uint64_t> runs, begun;
    for (const auto& kv : run_of) {
        runs.insert(kv.second);
        if (!names.parts.count(kv.first)) begun.insert(kv.second);
    }
    for (const auto& kv : names.parts) {
        std::uint64_t on = 0, r = 0;
        if (read_root_u64(kv.second, {{dt::attr_time_order, &on}, {dt::attr_run, &r}}) && on == 1 && runs.count(r))
            begun.insert(r);
    }
    std::uint64_t finished = 0;
    for (const auto& kv : ordered) {
        const auto it = run_of.find(kv.first);
        const bool complete = it != run_of.end() && begun.count(it->second);
        const std::string part = dt::part_path_of(file, kv.first);
        if (complete) {
            if (dt::path_exists(part) && ::unlink(part.c_str()) != 0)
                dt::throw_error(sd::Errc::hdf5, "cannot remove '" + part + "': " + std::strerror(errno), errno);
            if (std::rename(kv.second.c_str(), part.c_str()) != 0)
                dt::throw_error(sd::Errc::hdf5, "cannot rename '" + kv.second + "' to '" + part + "': " + std::strerror(errno),
                                errno);
            std::printf("  finished the time ordering: %s replaces %s\n", kv.second.c_str(), part.c_str());
            finished = it->second;
        } else {
            remove_file(kv.second);
        }
    }
    return finished;
}

int recover(const std::string& file) {
    std::uint64_t latest = settle_time_order(file);
    PartNames names = find_part_names(file);
    if (!names.parts.empty() && is_serial_file(file)) {
        std::uint64_t flat = 0;
        if (flat_run_of(file, flat))
            std::printf("%s: a self-contained file (flattened from run %s), which reads no part file; the part files "
                        "beside it are left as they are\n",
                        file.c_str(), hex16(flat).c_str());
        else
            std::printf("%s: a serial file; the part files beside it are from an earlier parallel run of that name, "
                        "not part of it: left as they are\n",
                        file.c_str());
        return recover_serial(file);
    }
    std::map<int, PartTags> tags;       // the parts that belong to FILE
    std::map<int, std::string> blank;   // parts with neither run attributes nor datasets
    for (const auto& kv : names.parts) {
        PartTags t;
        try {
            t = read_tags(kv.second);
        } catch (const sd::Error& e) {
            dt::throw_error(sd::Errc::hdf5, "part file '" + kv.second + "' cannot be recovered: " + dt::bare_message(e));
        }
        if (!t.ok) {
            // A part killed before its run attributes reached the disk holds nothing: it
            // is this run's (nothing else makes files of that name in SWMR mode) with 0
            // events. Anything else in the way is not ours: a serial FILE is still
            // recoverable; otherwise say what is in the way.
            if (t.datasets == 0) {
                blank[kv.first] = kv.second;
                continue;
            }
            if (dt::path_exists(file)) continue;
            dt::throw_error(sd::Errc::join, "'" + kv.second + "' is not a smalldata part file");
        }
        if (t.final_name == dt::base_name(file)) tags[kv.first] = t;
    }
    // A run's servers replace every part below their number, so a part of another run
    // beyond them was left by an earlier run with more servers: it is not this run's and is
    // left as it is. This run is the one whose time ordering recover just finished (its
    // done() was running); else the run of part 0, when every part below its part count is
    // of that run and every part of another run lies beyond it (a rerun with fewer
    // servers, killed). Anything else is refused by recover_parallel, naming both runs.
    std::uint64_t latest_parts = 0;
    if (latest == 0 && tags.count(0)) {
        const PartTags& t0 = tags.at(0);
        bool below = true, beyond = false;
        for (const auto& kv : tags) {
            const bool in = static_cast<std::uint64_t>(kv.first) < t0.parts;
            if (in && kv.second.run != t0.run) below = false;
            if (!in && kv.second.run != t0.run) beyond = true;
        }
        if (below && beyond) latest = t0.run;
    }
    for (const auto& kv : tags)
        if (latest != 0 && kv.second.run == latest) latest_parts = kv.second.parts;
    for (auto it = tags.begin(); it != tags.end();) {
        if (latest_parts > 0 && it->second.run != latest && static_cast<std::uint64_t>(it->first) >= latest_parts) {
            std::printf("%s: '%s' is a part of an earlier run (%s), beyond run %s's %" PRIu64 " parts: left as it is\n",
                        file.c_str(), dt::base_name(names.parts.at(it->first)).c_str(), hex16(it->second.run).c_str(),
                        hex16(latest).c_str(), latest_parts);
            names.parts.erase(it->first);
            it = tags.erase(it);
        } else {
            ++it;
        }
    }
    if (!tags.empty()) return recover_parallel(file, names, tags, blank);
    if (!blank.empty() && !dt::path_exists(file)) {
        // No part reached its first checkpoint: there is no run to rebuild.
        std::printf("%s: no part file reached its first checkpoint: 0 events\n", file.c_str());
        for (const auto& kv : blank) remove_file(kv.second);
        for (const auto& kv : names.tmps) remove_file(kv.second);
        remove_final_leftovers(file);
        return 0;
    }
    return recover_serial(file);
}

// ---------------------------------------------------------------- check
const char* yes(bool b) { return b ? "yes" : "NO"; }

std::string kind_text(const dt::DatasetInfo& d) {
    std::string s = d.known_type ? sd::dtype_name(d.dtype) : (d.is_string ? "string" : "?");
    return s + " " + d.shape.str();
}

// Why a file that exists cannot be opened, as advice: a running process is writing it (its
// writer's claim), or it is a crashed writer's file.
std::string unopened(const std::string& path) {
    return dt::WriteClaim::claimed(path) ? "it is being written by a running process: check it once that run has ended"
                                         : "crashed? run `smalldata recover` on it";
}

int check(const std::string& file) {
    std::vector<std::string> problems;
    auto problem = [&](const std::string& p) { problems.push_back(p); };
    dt::H5Quiet q;
    dt::H5Id f(H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
    if (!f.valid()) {
        const bool exists = dt::path_exists(file);
        const std::string why = exists ? dt::h5_stack() : std::string(std::strerror(ENOENT));
        std::printf("%s: cannot be opened%s\n", file.c_str(), exists ? (" (" + unopened(file) + ")").c_str() : "");
        std::printf("NOT SOUND: '%s' cannot be opened: %s\n", file.c_str(), why.c_str());
        return 1;
    }
    std::uint64_t run = 0, flat_run = 0;
    const bool has_run = dt::h5_get_attr_u64(f.get(), dt::attr_run, run);
    const bool flat = !has_run && dt::h5_get_attr_u64(f.get(), dt::attr_flat_run, flat_run);
    H5Eclear2(H5E_DEFAULT);
    const std::vector<dt::DatasetInfo> ds = dt::list_datasets(f.get(), file);
    bool any_virtual = false;
    for (const auto& d : ds) any_virtual = any_virtual || d.is_virtual;
    const dt::DatasetInfo* ts = nullptr;
    for (const auto& d : ds)
        if (d.name == "timestamp" && d.event_axis) ts = &d;
    const std::uint64_t events = ts ? ts->rows : 0;
    // A final file's empty fields are plain (contiguous) datasets: fields are the
    // datasets of one row per event, next to `timestamp`.
    std::vector<const dt::DatasetInfo*> fields, summaries;
    for (const auto& d : ds) {
        const bool field =
            d.event_axis || d.empty_field || (any_virtual && d.known_type && d.rank >= 1 && d.rows == 0 && events == 0);
        (field ? fields : summaries).push_back(&d);
    }
    if (!ts && !fields.empty()) problem("there is no 'timestamp' dataset");
    for (const auto* d : fields)
        if (!dt::is_unaligned(d->name) && !dt::is_var_name(d->name) && d->rows != events)
            problem("aligned dataset '" + d->name + "' has " + std::to_string(d->rows) + " rows, timestamp " +
                    std::to_string(events));
    // var_ fields: as many rows as their group's lengths add up to.
    for (const auto* d : fields) {
        if (!dt::is_var_name(d->name)) continue;
        const std::string ln = dt::length_name(d->name);
        const dt::DatasetInfo* len = nullptr;
        for (const auto* l : fields)
            if (l->name == ln) len = l;
        if (!len) {
            problem("var_ dataset '" + d->name + "' has no length dataset '" + ln + "'");
            continue;
        }
        dt::H5Id ld(H5Dopen2(f.get(), ln.c_str(), H5P_DEFAULT), H5Dclose);
        std::uint64_t sum = 0;
        bool read = ld.valid();
        if (read) {
            try {
                sum = dt::rows_of(ld.get(), len->rows, len->rows);
            } catch (const std::exception&) {
                read = false;
            }
        }
        H5Eclear2(H5E_DEFAULT);
        if (!read)
            problem("the lengths '" + ln + "' of var_ dataset '" + d->name + "' cannot be read");
        else if (sum != d->rows)
            problem("var_ dataset '" + d->name + "' has " + std::to_string(d->rows) + " rows, its lengths '" + ln +
                    "' add up to " + std::to_string(sum));
    }

    // Parts: every source of every mapping, the run's parts by number.
    struct PartState {
        std::string path;
        bool exists = false, opens = false, token_ok = false;
        std::string misplaced;  // what is wrong with its name (dt::misplaced_part)
        std::uint64_t events = 0;
        int index = -1;
    };
    std::map<std::string, PartState> parts;   // by stored source name
    std::uint64_t n_parts = 0;
    std::string final_name;
    const std::string dir = dir_of(file);
    std::map<std::string, std::vector<dt::DatasetInfo>> part_ds;
    for (const auto* d : fields) {
        if (!d->is_virtual) continue;
        for (const dt::VirtualSource& s : dt::virtual_sources(f.get(), d->name)) {
            const std::string src = dt::vds_unescape(s.file);
            auto it = parts.find(src);
            if (it == parts.end()) {
                PartState p;
                p.path = src == "." ? file : join_path(dir, src);
                p.exists = dt::path_exists(p.path);
                if (p.exists) {
                    dt::H5Id pf(H5Fopen(p.path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
                    p.opens = pf.valid();
                    if (p.opens) {
                        std::uint64_t tok = 0, idx = 0, np = 0;
                        std::string fin;
                        p.token_ok = dt::h5_get_attr_u64(pf.get(), dt::attr_run, tok) && has_run && tok == run;
                        if (dt::h5_get_attr_u64(pf.get(), dt::attr_part, idx)) p.index = static_cast<int>(idx);
                        if (dt::h5_get_attr_u64(pf.get(), dt::attr_parts, np)) n_parts = std::max(n_parts, np);
                        if (dt::h5_get_attr_string(pf.get(), dt::attr_final, fin)) final_name = fin;
                        p.misplaced = dt::misplaced_part(pf.get(), p.path);
                        part_ds[src] = dt::list_datasets(pf.get(), p.path);
                        p.events = dt::complete_rows(part_ds[src]);
                    }
                    H5Eclear2(H5E_DEFAULT);
                }
                if (!p.exists) problem("part file '" + p.path + "' is missing (mapped by '" + d->name + "')");
                else if (!p.opens) problem("part file '" + p.path + "' cannot be opened (" + unopened(p.path) + ")");
                else if (!p.token_ok) problem("part file '" + p.path + "' is not of this file's run " + hex16(run));
                else if (!p.misplaced.empty()) problem(p.misplaced);
                it = parts.emplace(src, p).first;
            }
            const PartState& p = it->second;
            if (!p.opens) continue;
            const std::string sname = dt::vds_unescape(s.dataset);
            const dt::DatasetInfo* sd_ = nullptr;
            for (const auto& x : part_ds[src])
                if (x.name == sname) sd_ = &x;
            if (!sd_)
                problem("'" + d->name + "' maps '" + sname + "' of '" + p.path + "', which has no such dataset");
            else if (sd_->rows < s.rows)
                problem("'" + d->name + "' maps " + std::to_string(s.rows) + " rows of '" + p.path + "', which has " +
                        std::to_string(sd_->rows));
        }
    }
    // Parts with no rows are not mapped; they must still be there to be a whole run.
    if (n_parts > 0 && !final_name.empty()) {
        const std::string as_final = join_path(dir, final_name);
        for (std::uint64_t k = 0; k < n_parts; ++k) {
            const std::string p = dt::part_path_of(as_final, static_cast<int>(k));
            bool known = false;
            for (const auto& kv : parts) known = known || kv.second.path == p;
            if (known) continue;
            PartState st;
            st.path = p;
            st.index = static_cast<int>(k);
            st.exists = dt::path_exists(p);
            if (!st.exists) {
                problem("part file '" + p + "' (part " + std::to_string(k) + " of " + std::to_string(n_parts) +
                        ") is missing");
            } else {
                dt::H5Id pf(H5Fopen(p.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
                st.opens = pf.valid();
                std::uint64_t tok = 0;
                st.token_ok = st.opens && dt::h5_get_attr_u64(pf.get(), dt::attr_run, tok) && has_run && tok == run;
                if (st.opens) {
                    st.events = dt::complete_rows(dt::list_datasets(pf.get(), p));
                    st.misplaced = dt::misplaced_part(pf.get(), p);
                }
                H5Eclear2(H5E_DEFAULT);
                if (!st.opens) problem("part file '" + p + "' cannot be opened (" + unopened(p) + ")");
                else if (!st.token_ok) problem("part file '" + p + "' is not of this file's run " + hex16(run));
                else if (!st.misplaced.empty()) problem(st.misplaced);
            }
            parts.emplace(dt::base_name(p), st);
        }
    }

    // The summary.
    std::printf("%s: %s, %" PRIu64 " events%s\n", file.c_str(),
                any_virtual ? "final file"
                            : has_run ? "final file without parts" : flat ? "self-contained file" : "serial file",
                events,
                has_run ? (", run " + hex16(run)).c_str() : flat ? (", flattened from run " + hex16(flat_run)).c_str() : "");
    std::printf("fields (%zu):\n", fields.size());
    std::size_t shown = 0;
    for (const auto* d : fields) {
        if (++shown > 40) {
            std::printf("  ... %zu more\n", fields.size() - 40);
            break;
        }
        std::printf("  %-32s %-20s %12" PRIu64 " rows%s\n", d->name.c_str(), kind_text(*d).c_str(), d->rows,
                    dt::is_unaligned(d->name) ? "  (unaligned)" : dt::is_var_name(d->name) ? "  (var_)" : "");
    }
    if (!summaries.empty()) {
        std::printf("summary datasets (%zu):", summaries.size());
        shown = 0;
        for (const auto* d : summaries) {
            if (++shown > 12) {
                std::printf(" ...");
                break;
            }
            std::printf(" %s", d->name.c_str());
        }
        std::printf("\n");
    }
    if (!parts.empty()) {
        std::vector<const PartState*> order;
        for (const auto& kv : parts) order.push_back(&kv.second);
        std::sort(order.begin(), order.end(), [](const PartState* a, const PartState* b) { return a->path < b->path; });
        std::printf("parts (%zu of %" PRIu64 "):\n", parts.size(), n_parts);
        for (const PartState* p : order)
            std::printf("  %-32s present %-3s  opens %-3s  run %-3s %12" PRIu64 " events\n", dt::base_name(p->path).c_str(),
                        yes(p->exists), yes(p->opens), yes(p->token_ok), p->events);
    }
    if (problems.empty()) {
        std::printf("sound\n");
        return 0;
    }
    for (const std::string& p : problems) std::printf("NOT SOUND: %s\n", p.c_str());
    return 1;
}

// ---------------------------------------------------------------- flatten
// FILE (a final file with its parts, or a serial file) into OUT: every dataset ordinary,
// chunked as a run with the default options makes them, each keeping its filters.
int flatten(const std::string& file, const std::string& out, bool force) {
    struct stat a, b;
    if (::stat(file.c_str(), &a) == 0 && ::stat(out.c_str(), &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
        dt::throw_error(sd::Errc::usage, "'" + out + "' is '" + file + "' itself: flatten it into another file");
    if (dt::path_exists(out) && !force)
        dt::throw_error(sd::Errc::usage, "'" + out + "' exists: give --force to replace it");
    const dt::FlattenSpec spec;
    dt::FlattenStats st;
    dt::flatten_file(file, out, spec, &st);
    std::printf("%s -> %s: %zu per-event dataset%s, %s in %.2f s (%s/s); %zu other dataset%s copied as they are\n",
                file.c_str(), out.c_str(), st.datasets, st.datasets == 1 ? "" : "s",
                dt::human_bytes(static_cast<double>(st.bytes)).c_str(), st.seconds,
                dt::human_bytes(st.seconds > 0 ? static_cast<double>(st.bytes) / st.seconds : 0).c_str(), st.copied,
                st.copied == 1 ? "" : "s");
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    const bool help = argc == 2 && std::strcmp(argv[1], "--help") == 0;
    const std::string verb = argc > 1 ? argv[1] : "";
    std::vector<std::string> operands;
    bool force = false, bad = false;
    for (int i = 2; i < argc; ++i) {
        if (verb == "flatten" && std::strcmp(argv[i], "--force") == 0)
            force = true;
        else if (argv[i][0] == '-' && argv[i][1] != '\0')
            bad = true;  // no other options
        else
            operands.emplace_back(argv[i]);
    }
    const std::size_t want = verb == "flatten" ? 2 : 1;
    if (bad || operands.size() != want || (verb != "recover" && verb != "check" && verb != "flatten")) {
        std::fputs(usage_text, help ? stdout : stderr);
        return help ? 0 : 2;
    }
    dt::who() = "smalldata " + verb;
    const std::string& file = operands[0];
    int rc = 1;
    try {
        rc = verb == "recover" ? recover(file) : verb == "check" ? check(file) : flatten(file, operands[1], force);
    } catch (const std::exception& e) {
        std::fflush(stdout);
        std::fprintf(stderr, "%s\nsmalldata %s: '%s' was not %s\n", e.what(), verb.c_str(), file.c_str(),
                     verb == "recover" ? "recovered" : verb == "check" ? "checked" : "flattened");
    }
    // A file whose close failed (one HDF5 could not read through) stays in HDF5's tables
    // although no handle of it is open; HDF5's own cleanup at exit then gives up on it
    // with "infinite loop closing library" and a line of codes. Everything of this tool is
    // closed by now: after a failure, with no HDF5 object left open, it ends without that
    // cleanup (files opened for writing were closed, or their close failed already).
    if (rc != 0 && H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL) == 0) {
        std::fflush(nullptr);
        std::_Exit(rc);
    }
    return rc;
}
