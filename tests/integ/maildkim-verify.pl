#!/usr/bin/perl
# maildkim-verify.pl - verify every DKIM signature of messages with Mail::DKIM
# (libmail-dkim-perl), keys taken offline from a directory.
#
# usage: maildkim-verify.pl --keys DIR [--expect-fail] FILE...
#
# DIR holds <selector>._domainkey.<domain>.txt files with the TXT text.
# Prints one line per signature:  pass|fail|skip FILE d=... s=... a=... detail
# "skip" is for an algorithm this Mail::DKIM lacks (Debian 12's has no
# ed25519-sha256); a skipped signature neither passes nor fails.
# Exit 0 only if every FILE has at least one checked signature and all the
# checked ones pass; with --expect-fail, only if every FILE has at least one
# checked signature and none passes.
use strict;
use warnings;
use Mail::DKIM::Verifier;
use Mail::DKIM::DNS;
use Net::DNS;

my ($keys, $expect_fail, @files);
while (@ARGV) {
	my $a = shift @ARGV;
	if ($a eq '--keys') { $keys = shift @ARGV; }
	elsif ($a eq '--expect-fail') { $expect_fail = 1; }
	else { push @files, $a; }
}
die "usage: maildkim-verify.pl --keys DIR [--expect-fail] FILE...\n"
    unless defined $keys && @files;

my $have_ed25519 = eval { require Mail::DKIM::Algorithm::ed25519_sha256; 1 } ? 1 : 0;

# Offline DNS: answer TXT queries from the keys dir.
{
	no warnings 'redefine';
	*Mail::DKIM::DNS::query = sub {
		my ($name, $type) = @_;
		$name =~ s/\.$//;
		my $path = "$keys/$name.txt";
		my $fh;
		unless (uc($type) eq 'TXT' && open($fh, '<', $path)) {
			$@ = 'NXDOMAIN';
			return ();
		}
		local $/;
		my $txt = <$fh>;
		close $fh;
		$txt =~ s/^\s+|\s+$//g;
		my @chunks = unpack('(A255)*', $txt);
		$@ = 'NOERROR';
		return (Net::DNS::RR->new(name => $name, type => 'TXT', txtdata => [@chunks]));
	};
}

my $ok = 1;
for my $path (@files) {
	open(my $fh, '<:raw', $path) or die "$path: $!\n";
	my $msg = do { local $/; <$fh> };
	close $fh;
	$msg =~ s/\r?\n/\r\n/g;
	# Mail::DKIM drops a last line without CRLF (SMTP always ends with one);
	# adding the CRLF changes neither canonical body (RFC 6376 3.4.3, 3.4.4).
	$msg .= "\r\n" if length($msg) && $msg !~ /\r\n\z/;
	my $v = Mail::DKIM::Verifier->new();
	$v->PRINT($msg);
	$v->CLOSE;
	my ($npass, $nchecked) = (0, 0);
	for my $sig ($v->signatures) {
		my $alg = $sig->algorithm // '?';
		my $line = sprintf('%s d=%s s=%s a=%s', $path, $sig->domain // '?',
		    $sig->selector // '?', $alg);
		if ($alg eq 'ed25519-sha256' && !$have_ed25519) {
			print "skip $line unsupported by this Mail::DKIM\n";
			next;
		}
		$nchecked++;
		my $r = $sig->result // 'none';
		if ($r eq 'pass') {
			$npass++;
			print "pass $line ok\n";
		} else {
			my $d = $sig->result_detail // $r;
			print "fail $line $d\n";
		}
	}
	if (!$nchecked) {
		print "fail $path no checkable DKIM-Signature\n";
		$ok = 0;
		next;
	}
	$ok &&= $expect_fail ? $npass == 0 : $npass == $nchecked;
}
exit($ok ? 0 : 1);
