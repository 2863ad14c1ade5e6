// Mirrors migrations/{postgres,sqlite}; both dialects map onto these Diesel types.
diesel::table! {
    packages (id) {
        id -> BigInt,
        name -> Text,
        version -> Text,
        version_sort -> Text,
        prerelease -> Bool,
        platform -> Text,
        arch -> Text,
        file_size -> BigInt,
        checksum -> Text,
        storage_path -> Text,
        filename -> Text,
        description -> Text,
        is_active -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        signature_format -> Nullable<Text>,
        signature_key -> Nullable<Text>,
        signature_signer -> Nullable<Text>,
        signature_verified_at -> Nullable<Timestamp>,
        download_count -> BigInt,
        last_downloaded_at -> Nullable<Timestamp>,
        yanked_at -> Nullable<Timestamp>,
        signature_identity -> Nullable<BigInt>,
        signature_issuer -> Nullable<Text>,
        signature_signed_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    package_downloads (package_id, day) {
        package_id -> BigInt,
        day -> Date,
        name -> Text,
        version -> Text,
        platform -> Text,
        arch -> Text,
        downloads -> BigInt,
        bytes -> BigInt,
    }
}

diesel::joinable!(package_downloads -> packages (package_id));
diesel::allow_tables_to_appear_in_same_query!(package_downloads, packages);

diesel::table! {
    users (id) {
        id -> BigInt,
        username -> Text,
        password_hash -> Text,
        role -> Text,
        created_at -> Timestamp,
        credentials_version -> BigInt,
    }
}

diesel::table! {
    blobs (checksum) {
        checksum -> Text,
        storage_path -> Text,
        file_size -> BigInt,
        created_at -> Timestamp,
    }
}

diesel::table! {
    uploads_in_flight (storage_path) {
        storage_path -> Text,
        started_at -> Timestamp,
        touched_at -> Timestamp,
    }
}

diesel::table! {
    api_tokens (id) {
        id -> BigInt,
        user_id -> BigInt,
        name -> Text,
        scope -> Text,
        packages -> Text,
        secret_hash -> Text,
        created_at -> Timestamp,
        expires_at -> Nullable<Timestamp>,
        last_used_at -> Nullable<Timestamp>,
    }
}

diesel::joinable!(api_tokens -> users (user_id));
diesel::allow_tables_to_appear_in_same_query!(api_tokens, users);

diesel::table! {
    audit_events (id) {
        id -> BigInt,
        at -> Timestamp,
        actor_id -> Nullable<BigInt>,
        actor -> Nullable<Text>,
        token_name -> Nullable<Text>,
        action -> Text,
        package -> Nullable<Text>,
        package_id -> Nullable<BigInt>,
        subject -> Nullable<Text>,
        address -> Nullable<Text>,
        request_id -> Nullable<Text>,
        detail -> Text,
        outcome -> Text,
    }
}

diesel::table! {
    ended_sessions (token_hash) {
        token_hash -> Text,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    login_failures (key) {
        key -> Text,
        failures -> BigInt,
        first_at -> Timestamp,
        blocked_until -> Nullable<Timestamp>,
    }
}

diesel::table! {
    package_names (name) {
        name -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    package_owners (name, user_id) {
        name -> Text,
        user_id -> BigInt,
    }
}

diesel::joinable!(package_owners -> users (user_id));
diesel::allow_tables_to_appear_in_same_query!(package_owners, users);

diesel::table! {
    teams (id) {
        id -> BigInt,
        name -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    team_members (team_id, user_id) {
        team_id -> BigInt,
        user_id -> BigInt,
    }
}

diesel::table! {
    package_team_owners (name, team_id) {
        name -> Text,
        team_id -> BigInt,
    }
}

diesel::joinable!(team_members -> teams (team_id));
diesel::joinable!(team_members -> users (user_id));
diesel::joinable!(package_team_owners -> teams (team_id));
diesel::allow_tables_to_appear_in_same_query!(team_members, teams, users, package_team_owners);

diesel::table! {
    package_signatures (package_id) {
        package_id -> BigInt,
        data -> Binary,
    }
}

diesel::table! {
    mirror_assets (source, version, platform, arch) {
        source -> Text,
        version -> Text,
        platform -> Text,
        arch -> Text,
        url -> Text,
        state -> Text,
        detail -> Text,
        package_id -> Nullable<BigInt>,
        attempts -> Integer,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    sigstore_identities (id) {
        id -> BigInt,
        patterns -> Text,
        issuer -> Text,
        san_regex -> Text,
        added_by -> Nullable<BigInt>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    signing_keys (fingerprint) {
        fingerprint -> Text,
        armored -> Text,
        user_ids -> Text,
        algorithm -> Text,
        key_created_at -> Nullable<Timestamp>,
        expires_at -> Nullable<Timestamp>,
        revoked -> Bool,
        patterns -> Text,
        added_by -> Nullable<BigInt>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::joinable!(package_signatures -> packages (package_id));
diesel::allow_tables_to_appear_in_same_query!(package_signatures, packages);

diesel::table! {
    direct_uploads (id) {
        id -> Text,
        user_id -> Nullable<BigInt>,
        name -> Text,
        version -> Text,
        platform -> Text,
        arch -> Text,
        file_size -> BigInt,
        checksum -> Text,
        filename -> Nullable<Text>,
        description -> Text,
        storage_path -> Text,
        signature_format -> Nullable<Text>,
        signature -> Nullable<Binary>,
        expires_at -> Timestamp,
        created_at -> Timestamp,
    }
}

diesel::table! {
    upload_sessions (id) {
        id -> Text,
        user_id -> Nullable<BigInt>,
        kind -> Text,
        name -> Nullable<Text>,
        version -> Nullable<Text>,
        platform -> Nullable<Text>,
        arch -> Nullable<Text>,
        filename -> Nullable<Text>,
        description -> Text,
        checksum -> Nullable<Text>,
        signature_format -> Nullable<Text>,
        signature -> Nullable<Binary>,
        metadata -> Text,
        parts_of -> Text,
        upload_length -> BigInt,
        upload_offset -> BigInt,
        storage_path -> Text,
        multipart_id -> Nullable<Text>,
        parts -> Text,
        tail_path -> Nullable<Text>,
        tail_size -> BigInt,
        hash_state -> Binary,
        lease_token -> Nullable<Text>,
        lease_until -> Nullable<Timestamp>,
        package_id -> Nullable<BigInt>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    agents (instance_uid) {
        instance_uid -> Text,
        sequence_num -> BigInt,
        capabilities -> BigInt,
        identifying -> Text,
        non_identifying -> Text,
        health -> Nullable<Text>,
        package_statuses -> Text,
        first_seen -> Timestamp,
        last_seen -> Timestamp,
        connected -> Bool,
        disconnects -> BigInt,
        disconnected_at -> Nullable<Timestamp>,
        offered_hash -> Nullable<Text>,
        offer_note -> Nullable<Text>,
        owner -> Nullable<Text>,
        offered -> Text,
    }
}

diesel::table! {
    assignments (id) {
        id -> BigInt,
        package -> Text,
        version -> Text,
        offer_as -> Text,
        selector -> Text,
        rollout_percent -> Integer,
        max_failure_ratio -> Double,
        v_prefix -> Bool,
        paused -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        rollout_id -> Nullable<BigInt>,
        signature -> Text,
    }
}

diesel::table! {
    rollouts (id) {
        id -> BigInt,
        assignment_id -> BigInt,
        version -> Text,
        from_version -> Nullable<Text>,
        plan -> Text,
        state -> Text,
        cause -> Text,
        wave -> Integer,
        wave_started -> Bool,
        approved_wave -> Nullable<Integer>,
        step -> BigInt,
        active -> Bool,
        created_by -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    rollout_agents (rollout_id, instance_uid) {
        rollout_id -> BigInt,
        instance_uid -> Text,
        wave -> Integer,
        previous_version -> Text,
        phase -> Text,
        attempts -> Integer,
        offered_at -> Timestamp,
        installed_at -> Nullable<Timestamp>,
        healthy_since -> Nullable<Timestamp>,
        last_report_at -> Nullable<Timestamp>,
        failure -> Nullable<Text>,
        failure_message -> Text,
        failed_at -> Nullable<Timestamp>,
        retry_at -> Nullable<Timestamp>,
        acknowledged -> Bool,
    }
}

diesel::table! {
    rollout_transitions (rollout_id, step) {
        rollout_id -> BigInt,
        step -> BigInt,
        at -> Timestamp,
        state -> Text,
        wave -> Integer,
        cause -> Text,
        actor -> Nullable<Text>,
    }
}

diesel::table! {
    job_leases (name) {
        name -> Text,
        holder -> Text,
        until -> Timestamp,
    }
}

diesel::joinable!(rollout_agents -> rollouts (rollout_id));
diesel::allow_tables_to_appear_in_same_query!(rollout_agents, rollouts, assignments);
diesel::allow_tables_to_appear_in_same_query!(agents, agent_packages, rollout_agents);

diesel::table! {
    agent_packages (instance_uid, name) {
        instance_uid -> Text,
        name -> Text,
        offered_version -> Text,
        agent_has_version -> Text,
        status -> Text,
        error_message -> Text,
        updated_at -> Timestamp,
        answers_offer -> Bool,
    }
}
