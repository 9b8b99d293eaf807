# frozen_string_literal: true

# The project's SSH key pair for the Vagrant lab, kept on the host in Vagrant's gitignored state directory
# (.vagrant/ next to the Vagrantfile) together with the known_hosts file the inventory uses.
# Never commit these files: the private key gives root (through sudo) on the VMs.

require "fileutils"
require "open3"

class ProjectKey
  KEY_NAME = "provisioner_ed25519"
  KNOWN_HOSTS_NAME = "provisioner_known_hosts"
  COMMENT = "provisioner-vagrant"
  # Vagrant subcommands that may run the shell provisioner, which needs the public key.
  COMMANDS_THAT_PROVISION = %w[up provision reload].freeze

  attr_reader :private_key, :known_hosts

  def initialize(state_dir)
    @state_dir = state_dir
    @private_key = File.join(state_dir, KEY_NAME)
    @known_hosts = File.join(state_dir, KNOWN_HOSTS_NAME)
  end

  def public_key_path
    "#{@private_key}.pub"
  end

  # Creates the key pair if it is missing (and the public half if only the private key survived).
  def ensure!
    FileUtils.mkdir_p(@state_dir)
    if File.exist?(@private_key)
      derive_public_key unless File.exist?(public_key_path)
    else
      FileUtils.rm_f(public_key_path)
      ssh_keygen("-q", "-t", "ed25519", "-N", "", "-C", COMMENT, "-f", @private_key)
      File.chmod(0o600, @private_key)
    end
  end

  # The public key line, or "" when no key exists yet: commands that never provision (validate, status,
  # destroy, ssh) must not create keys; vagrant/provision.sh refuses an empty key.
  def public_key
    File.exist?(public_key_path) ? File.read(public_key_path).strip : ""
  end

  def forget_host(address)
    return unless File.exist?(@known_hosts)

    ssh_keygen("-q", "-R", address, "-f", @known_hosts)
    FileUtils.rm_f("#{@known_hosts}.old")
  end

  private

  def derive_public_key
    # Newer ssh-keygen versions print the key's comment too; keep only type and key.
    type, key = ssh_keygen("-y", "-f", @private_key).split
    File.write(public_key_path, "#{type} #{key} #{COMMENT}\n")
  end

  def ssh_keygen(*args)
    out, err, status = Open3.capture3("ssh-keygen", *args)
    return out if status.success?

    raise "ssh-keygen #{args.join(' ')} failed (exit #{status.exitstatus}): #{err.strip}\n" \
          "fix: check that #{@state_dir} is writable, or delete #{@private_key}* to start over"
  rescue Errno::ENOENT
    raise "ssh-keygen not found on this machine; the Vagrant lab creates its project key with it.\n" \
          "fix: install the OpenSSH client (Debian/Ubuntu: apt install openssh-client; Windows: the " \
          "optional feature 'OpenSSH Client'), then run `vagrant up` again"
  end
end
