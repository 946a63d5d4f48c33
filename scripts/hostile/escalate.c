/* escalate: what a hostile image's program tries, and what it got. Built static by
 * scripts/testbed.sh into the jobdock-test/hostile* images, installed setuid-root (suid-escalate)
 * and with file capabilities (cap-escalate). Prints one "key=value" line per fact, for
 * tests/main/security.rs:
 *
 *   escalate [FILE...]   report ids and capabilities; try setuid(0), setgid(0), setgroups([0]),
 *                        then report ids and capabilities again; then try to read each FILE.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void status(const char *when) {
    uid_t r, e, s;
    gid_t rg, eg, sg;
    char line[512];
    FILE *f;
    getresuid(&r, &e, &s);
    getresgid(&rg, &eg, &sg);
    printf("%s.ruid=%d\n%s.euid=%d\n%s.suid=%d\n", when, (int)r, when, (int)e, when, (int)s);
    printf("%s.rgid=%d\n%s.egid=%d\n%s.sgid=%d\n", when, (int)rg, when, (int)eg, when, (int)sg);
    f = fopen("/proc/self/status", "r");
    if (!f) return;
    while (fgets(line, sizeof line, f)) {
        char key[64], value[400];
        if (sscanf(line, "%63[^:]:%*[ \t]%399[^\n]", key, value) == 2 &&
            (!strncmp(key, "Cap", 3) || !strcmp(key, "NoNewPrivs") || !strcmp(key, "Groups")))
            printf("%s.%s=%s\n", when, key, value);
    }
    fclose(f);
}

static const char *result(int rc) { return rc == 0 ? "ok" : strerror(errno); }

int main(int argc, char **argv) {
    gid_t zero = 0;
    status("start");
    printf("setgroups0=%s\n", result(setgroups(1, &zero)));
    printf("setgid0=%s\n", result(setgid(0)));
    printf("setuid0=%s\n", result(setuid(0)));
    status("end");
    for (int i = 1; i < argc; i++) {
        char buf[64];
        int fd = open(argv[i], O_RDONLY);
        if (fd < 0) {
            printf("read %s=%s\n", argv[i], strerror(errno));
            continue;
        }
        ssize_t n = read(fd, buf, sizeof buf);
        printf("read %s=%s\n", argv[i], n >= 0 ? "ok" : strerror(errno));
        close(fd);
    }
    fflush(stdout);
    return 0;
}
