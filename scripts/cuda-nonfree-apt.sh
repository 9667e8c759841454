# shellcheck shell=bash
# cuda-nonfree-apt.sh: sourced by the cuda-*-check scripts, which fetch
# packages from Debian's non-free component without touching the system's
# apt configuration, lists or installed packages.

# nonfree_apt DIR [APT-OPTION...]: write a private sources file under DIR that
# names bookworm non-free alone, set APT_OPTS to the apt-get options that use
# it (with DIR's own package lists, and any extra options given), and update
# those lists.
nonfree_apt() {
	local dir=$1
	shift
	mkdir -p "$dir/lists/partial"
	cat >"$dir/fmtrain-nonfree.sources" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
	APT_OPTS=(-o "Dir::Etc::SourceList=$dir/fmtrain-nonfree.sources" -o "Dir::Etc::SourceParts=/dev/null"
		-o "Dir::State::Lists=$dir/lists" "$@" -o APT::Sandbox::User=root)
	apt-get "${APT_OPTS[@]}" -q update >/dev/null
}
